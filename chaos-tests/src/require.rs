//! The skip rule for tests that need something a developer machine may lack (libvirt, root,
//! iptables): locally they skip with the reason printed; CI sets `DROVER_REQUIRE_LIBVIRT`,
//! and there a missing prerequisite fails the test instead of passing silently.

/// Runs `check`; `true` means go on.
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
