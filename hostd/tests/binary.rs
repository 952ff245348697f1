//! The hostd binary as harnesses use it: started with `--listen 127.0.0.1:0`, it prints
//! `listening on <addr>` on stdout, serves there, and exits cleanly on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::GetHostInfoRequest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(10);

const NODE_XML: &str = "<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
  <active>4</active></cpu>
  <memory>8388608</memory>
</node>
";

#[tokio::test]
async fn prints_its_address_serves_and_stops_on_sigterm() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node.xml");
    std::fs::write(&node, NODE_XML).expect("write node.xml");
    let data_dir = dir.path().join("state/hostd");

    let mut child = Command::new(env!("CARGO_BIN_EXE_hostd"))
        .args([
            "--name",
            "bin-1",
            "--listen",
            "127.0.0.1:0",
            "--insecure",
            "--libvirt-uri",
        ])
        .arg(format!("test://{}", node.display()))
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hostd");
    let stdout = child.stdout.take().expect("piped stdout");

    eprintln!("phase: the first stdout line names the bound address");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("timed out waiting for the listening line")
        .expect("read stdout")
        .expect("hostd closed stdout");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(!addr.ends_with(":0"), "port 0 was not resolved: {addr}");

    eprintln!("phase: it serves on that address and created its data dir");
    let mut client = tokio::time::timeout(WAIT, HostAgentClient::connect(format!("http://{addr}")))
        .await
        .expect("timed out connecting")
        .expect("connect");
    let info = client
        .get_host_info(GetHostInfoRequest {})
        .await
        .expect("GetHostInfo")
        .into_inner();
    assert_eq!(info.name, "bin-1");
    assert_eq!(info.vcpus, 4);
    assert_eq!(info.memory_mib, 8192);
    assert!(data_dir.is_dir());
    drop(client);

    eprintln!("phase: SIGTERM stops it cleanly, with nothing more on stdout");
    let pid = child.id().expect("hostd pid");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("timed out waiting for hostd to exit")
        .expect("wait for hostd");
    assert!(exit.success(), "hostd exited with {exit}");
    let rest = lines.next_line().await.expect("read stdout");
    assert_eq!(rest, None, "stdout carries only the listening line");
}
