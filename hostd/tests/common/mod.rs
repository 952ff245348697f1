//! Shared by hostd's integration tests: the skip rule for tests that need something the
//! machine may lack. Locally they skip with the reason printed; CI sets
//! `DROVER_REQUIRE_LIBVIRT`, and there a missing prerequisite fails the test.

// Each test crate uses a different subset.
#![allow(dead_code)]

pub mod hostd;

/// Returns whether to go on; `Err(reason)` means the prerequisite is missing.
pub fn prerequisite(check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) if std::env::var_os("DROVER_REQUIRE_LIBVIRT").is_some() => {
            panic!("required here but missing: {why}")
        }
        Err(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// libvirt's test driver can be opened.
pub fn libvirt_test_driver() -> Result<(), String> {
    virt::connect::Connect::open(Some("test:///default"))
        .map(|_| ())
        .map_err(|e| format!("cannot open libvirt's test driver: {e}"))
}
