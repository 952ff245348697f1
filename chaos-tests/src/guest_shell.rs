//! Network checks typed into a test guest's shell over its serial console
//! ([`Session`]): commands whose answer is a marker the shell computes (so the echo of
//! the typed line never matches), pings that must or must not get through, and a
//! background ping whose longest gap is the interruption a peer saw.

use std::time::Duration;

use crate::console::Session;
use crate::Cluster;

/// How long one command may take: a TCG guest's shell under a loaded machine is slow.
pub const WAIT: Duration = Duration::from_secs(120);

/// The tests' background ping interval.
pub const PING_EVERY_MS: u64 = 200;

/// The overlays the guest network tests use: VXLAN network `name` with VNI `vni`, subnet
/// 10.77.0.0/24 handing out `range` (`.10-.20`), and with `dhcp` a DHCP server at `.2`
/// telling guests of gateway `.1` and DNS server `.53`.
/// Two overlays in one subnet can be on one host only if at most one has DHCP (its
/// bridge has an address in the subnet; two would collide in the kernel's routes).
pub async fn overlay(
    cluster: &Cluster,
    name: &str,
    vni: u32,
    range: &str,
    dhcp: bool,
) -> anyhow::Result<()> {
    let vni = vni.to_string();
    let create = ["net", "create", name, "--type", "vxlan", "--vni", &vni];
    let mut subnet = vec![
        "net",
        "subnet",
        "add",
        name,
        "10.77.0.0/24",
        "--range",
        range,
    ];
    if dhcp {
        subnet.extend(["--dhcp-server", ".2", "--gateway", ".1", "--dns", ".53"]);
    }
    for args in [&create[..], &subnet[..]] {
        cluster
            .cli_json(args)
            .await
            .map_err(|e| anyhow::anyhow!("{args:?}: {e}"))?;
    }
    Ok(())
}

/// Types `command` and waits for `expect`.
pub async fn run(session: &mut Session, command: &str, expect: &str) -> anyhow::Result<()> {
    session
        .expect(expect, format!("{command}\r").as_bytes(), WAIT)
        .await
}

/// Pings with `args` (`-I ADDR TARGET`, or just `TARGET`) three times and asserts that it
/// gets through (`reaches`) or not; `tag` names the check in the marker.
pub async fn assert_ping(
    session: &mut Session,
    tag: &str,
    args: &str,
    reaches: bool,
) -> anyhow::Result<()> {
    let t = tag.to_uppercase();
    let command =
        format!("t={t}; ping -c 3 -W 2 {args} >/dev/null 2>&1 && echo $t-yes || echo $t-no");
    let want = format!("{t}-{}", if reaches { "yes" } else { "no" });
    run(session, &command, &want)
        .await
        .map_err(|e| anyhow::anyhow!("ping {args}: wanted {want}: {e}"))
}

/// Starts the guest pinging `ip` in the background, every `every_ms`, into
/// `/ping{n}.out`.
pub async fn start_pinging(
    session: &mut Session,
    ip: &str,
    n: u32,
    every_ms: u64,
) -> anyhow::Result<()> {
    let every = format!("{:.2}", every_ms as f64 / 1000.0);
    let command = format!(
        "ping -i {every} {ip} >/ping{n}.out 2>&1 & echo $! >/ping{n}.pid; echo BG-$((0+{n}))"
    );
    run(session, &command, &format!("BG-{n}")).await
}

/// Stops the pinging `n` (started every `every_ms`) and returns the longest interruption
/// it saw, in ms: the largest jump between the sequence numbers of two replies in a row,
/// less one, times the interval.
pub async fn interruption_ms(session: &mut Session, n: u32, every_ms: u64) -> anyhow::Result<u64> {
    let command = format!(
        "kill $(cat /ping{n}.pid); awk -F'seq=' '/seq=/ {{split($2, s, \" \"); \
         if (p != \"\" && s[1] - p > g) g = s[1] - p; p = s[1]}} \
         END {{print \"GAP{n}\" \"=\" g+0}}' /ping{n}.out"
    );
    let marker = format!("GAP{n}=");
    run(session, &command, &marker).await?;
    // The number after the marker is complete once its line ended.
    let jump: u64 = crate::wait_until("the gap", WAIT, || async {
        let text = session.stdout();
        let line = text
            .split(&marker)
            .nth(1)
            .filter(|rest| rest.contains('\n'));
        Ok(line.and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
    })
    .await?;
    Ok(jump.saturating_sub(1) * every_ms)
}
