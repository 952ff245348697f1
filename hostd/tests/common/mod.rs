//! Shared by hostd's integration tests: the skip rule for tests that need something the
//! machine may lack. Locally they skip with the reason printed; CI sets
//! `DROVER_REQUIRE_LIBVIRT`, and there a missing prerequisite fails the test.

// Each test crate uses a different subset.
#![allow(dead_code)]

pub mod hostd;

pub use drover_chaos_tests::require::prerequisite;

/// libvirt's test driver can be opened.
pub fn libvirt_test_driver() -> Result<(), String> {
    virt::connect::Connect::open(Some("test:///default"))
        .map(|_| ())
        .map_err(|e| format!("cannot open libvirt's test driver: {e}"))
}
