//! Support for muster's cross-crate and end-to-end tests: the lab teardown they share and
//! the MEASURED recorder. The stand-ins for kubeadm, the kubelet and k3s are a crate of
//! their own, `muster-standins` (`tests/standins/`, see `tests/README.md`).

pub mod harness;
pub mod measured;

/// `measured!("...", args)` in an integration test: [`measured::record`] into that test's
/// `CARGO_TARGET_TMPDIR` (the macro expands there, where cargo sets it).
#[macro_export]
macro_rules! measured {
    ($($arg:tt)*) => {
        $crate::measured::record(
            ::std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
            format_args!($($arg)*),
        )
    };
}

// `measured::record`'s test lives here, not in its file: the builder's integration tests
// include that file by path, and would run the test again in each of their binaries.
#[cfg(test)]
mod tests {
    #[test]
    fn measured_appends_one_line_per_figure() {
        let dir = tempfile::tempdir().unwrap();
        crate::measured::record(dir.path(), format_args!("first {:.1}s", 2.0));
        crate::measured::record(dir.path(), format_args!("second"));
        let text = std::fs::read_to_string(dir.path().join("measured.txt")).unwrap();
        assert_eq!(text, "MEASURED first 2.0s\nMEASURED second\n");
    }
}
