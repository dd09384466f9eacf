//! Compile-fail and compile-pass tests of the `cnn!` macro (trybuild): every error class is a
//! compile error at the user's own tokens (`tests/ui/fail/*.stderr` are the snapshots; refresh
//! with `TRYBUILD=overwrite cargo test --test ui`), and the seed model compiles and runs inline
//! and included from YAML and `.cnn`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
