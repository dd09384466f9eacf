//! The `cnn!` macro: a thin shell over [`cnn_dsl::expand`], where all the logic (and its tests)
//! lives. Use it through the `cnn` crate (`use cnn::cnn;`).

use proc_macro::TokenStream;

/// Declares a CNN, shape-checks it at compile time and generates a specialised model type.
///
/// Inline, in the grammar of `.cnn` files:
///
/// ```ignore
/// cnn::cnn! {
///     model Tiny(input = [1, 8, 8]) -> [2] {
///         conv2d(out_channels = 4, kernel_size = 3), relu,
///         flatten,
///         linear(in_features = 4*6*6, out_features = 2),
///     }
/// }
/// ```
///
/// Or from a spec file, resolved relative to the calling source file like `include_str!`
/// (edits of the file rebuild the crate):
///
/// ```ignore
/// cnn::cnn!(include "models/seed.yaml");
/// ```
///
/// Shape errors are compile errors at the offending tokens (inline) or at the path literal,
/// carrying the file's `line:col` and snippet (included).
#[proc_macro]
pub fn cnn(input: TokenStream) -> TokenStream {
    let call_site_file = proc_macro::Span::call_site().local_file();
    cnn_dsl::expand::expand(input.into(), call_site_file).into()
}
