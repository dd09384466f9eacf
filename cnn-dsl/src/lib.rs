//! Front-ends, IR, shape checker, diagnostics and code generation for `cnn`.
