//! What the lab end-to-end tests share at teardown.

use muster::lab::Lab;

/// Ends a test's lab: with `MUSTER_LAB_KEEP` set it stays up to inspect (and says where);
/// otherwise `down`, and anything left behind fails the test (unless it already failed).
pub fn finish(lab: Lab) {
    if std::env::var_os("MUSTER_LAB_KEEP").is_some() {
        eprintln!(
            "MUSTER_LAB_KEEP: lab kept in {}; `muster lab down --state {0}` removes it",
            lab.record().state_dir.display()
        );
        return;
    }
    let left = lab.down();
    assert!(
        left.is_empty() || std::thread::panicking(),
        "left behind: {left:?}"
    );
}
