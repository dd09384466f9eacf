//! Small helpers every kernel module shares (one home for each).

/// Panics with a message naming `what` unless `len == expected`: slice lengths are a contract
/// with the plan that sized them, so a mismatch is a bug, not a user error.
#[track_caller]
pub(crate) fn check_len(what: &str, len: usize, expected: usize) {
    assert!(
        len == expected,
        "{what}: slice has {len} elements, the geometry needs {expected}"
    );
}

/// A raw output pointer shared between rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only used to write elements that no other task reads or writes; each
// user documents why its tasks' writes are disjoint.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
