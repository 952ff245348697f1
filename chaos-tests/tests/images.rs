//! Images end to end: 3 controllers and one hostd on real QEMU (`qemu:///system`).
//! `drover image import` streams a qcow2 through the leader (whichever controller the CLI
//! reaches first) into a pool; the image is ready with its format, sizes and the file's
//! SHA-256. A VM created from it boots from a qcow2 overlay on the image (a linked clone),
//! whose disk grows online while it runs; the image cannot be deleted while that disk exists; once the VM is gone, deleting the
//! image removes its volume from the host. Bad input — a file that is not an image, an
//! unknown pool, an unknown image, a boot disk smaller than the image, a name taken — is
//! refused with the reason, and a refused import leaves no volume behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use drover_chaos_tests::process::binary;
use drover_chaos_tests::system_libvirt::{self, Leftovers, QEMU_SYSTEM};
use drover_chaos_tests::{free_port, require, wait_until, Cluster, ClusterSpec};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The files in the pool's directory, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `vm` is observed in state `want`.
async fn wait_vm(cluster: &Cluster, vm: &str, want: &str) -> anyhow::Result<Value> {
    wait_until(&format!("{vm} {want}"), WAIT, || async {
        let v = cluster.cli_json(&["vm", "get", vm]).await?;
        Ok((v["observed_state"] == want).then_some(v))
    })
    .await
}

/// Waits until `vm` is gone from the state.
async fn wait_vm_gone(cluster: &Cluster, vm: &str) -> anyhow::Result<()> {
    wait_until(&format!("{vm} gone"), WAIT, || async {
        let out = cluster
            .cli(&["vm", "get", vm])
            .await
            .map_err(|e| e.to_string())?;
        Ok((!out.success).then_some(()))
    })
    .await
}

/// Waits until the cluster has no images (a deleted or failed one is forgotten once its
/// host deleted its volume).
async fn wait_no_images(cluster: &Cluster) -> anyhow::Result<()> {
    wait_until("no images", WAIT, || async {
        let images = cluster.cli_json(&["image", "list"]).await?;
        Ok(images
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_import_clone_and_delete_through_the_cluster() -> anyhow::Result<()> {
    if !require::prerequisite(system_libvirt::available()) {
        return Ok(());
    }
    // Released last (declared first): no other test cluster's pools meet ours.
    let _exclusive = system_libvirt::exclusive().await?;
    let pid = std::process::id();
    let (vm, pool) = (format!("img-{pid}"), format!("imgpool-{pid}"));
    let _leftovers = Leftovers {
        domains: vec![vm.clone(), format!("{vm}-kept")],
        pools: vec![pool.clone()],
    };
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        ..ClusterSpec::default()
    })
    .await?;
    cluster.add_agent("q1", QEMU_SYSTEM).await?;
    cluster.wait_hosts_up().await?;
    let dir = system_libvirt::pool_dir("drover-img")?;
    let path = dir.path().to_str().expect("utf-8 path");
    let out = cluster
        .cli(&[
            "pool", "create", &pool, "--path", path, "--hosts", "q1", "--wait", "30s",
        ])
        .await?;
    anyhow::ensure!(out.success, "pool create: {}", out.stderr);

    let work = tempfile::tempdir()?;
    let src = work.path().join("base.qcow2");
    let src_s = src.to_str().expect("utf-8 path");
    run("qemu-img", &["create", "-q", "-f", "qcow2", src_s, "32M"])?;
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 0 1M", src_s],
    )?;
    let sha = run("sha256sum", &[src_s])?;
    let sha = sha.split_whitespace().next().unwrap_or_default();
    let junk = work.path().join("junk.img");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend(std::iter::repeat_n(0xffu8, 8192));
    std::fs::write(&junk, bytes)?;

    eprintln!("phase: bad imports are refused with the reason and leave nothing behind");
    for (args, says) in [
        (
            vec![
                "image",
                "import",
                "junk",
                "--file",
                junk.to_str().unwrap(),
                "--pool",
                &pool,
            ],
            "qemu-img info refused",
        ),
        (
            vec!["image", "import", "x", "--file", src_s, "--pool", "nowhere"],
            "Pool \"nowhere\" not found",
        ),
        (
            vec![
                "image",
                "import",
                "y",
                "--file",
                "/no/such/file",
                "--pool",
                &pool,
            ],
            "/no/such/file",
        ),
    ] {
        let out = cluster.cli(&args).await?;
        assert!(!out.success, "{args:?} succeeded");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    // The refused import's image is deleted by its host, then forgotten.
    wait_no_images(&cluster).await?;
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));

    eprintln!("phase: an import whose client dies mid-way is cleaned up");
    let big = work.path().join("big.raw");
    std::fs::File::create(&big)?.set_len(2 << 30)?;
    let mut client = tokio::process::Command::new(binary("drover"))
        .args([
            "image",
            "import",
            "big",
            "--file",
            big.to_str().unwrap(),
            "--pool",
            &pool,
        ])
        .args(["--endpoints", &cluster.endpoints(), "--timeout", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_until("the big import to be under way", WAIT, || async {
        let images = cluster.cli_json(&["image", "list"]).await?;
        let importing = images
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["name"] == "big" && i["state"] == "importing");
        Ok(importing.then_some(()))
    })
    .await?;
    client.kill().await?;
    wait_until("the cut-off import to be forgotten", WAIT, || async {
        let images = cluster.cli_json(&["image", "list"]).await?;
        let empty = images.as_array().is_some_and(|a| a.is_empty());
        Ok((empty && files(dir.path()).is_empty()).then_some(()))
    })
    .await?;

    eprintln!("phase: a qcow2 is imported through the leader, checked and hashed");
    let image = cluster
        .cli_json(&["image", "import", "base", "--file", src_s, "--pool", &pool])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(image["state"], "ready", "{image}");
    assert_eq!(image["format"], "qcow2");
    assert_eq!(image["virtual_bytes"], 32u64 << 20);
    assert_eq!(image["sha256"], sha);
    assert_eq!(image["host"], "q1");
    let volume = image["volume"].as_str().unwrap_or_default().to_string();
    assert_eq!(files(dir.path()), std::slice::from_ref(&volume));
    let again = cluster
        .cli(&["image", "import", "base", "--file", src_s, "--pool", &pool])
        .await?;
    assert!(
        !again.success && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );

    eprintln!("phase: the cluster fetches an image from an http:// URL itself");
    let port = free_port()?;
    let _server = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .arg("--directory")
        .arg(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_until("the HTTP server", WAIT, || async {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        Ok(up.then_some(()))
    })
    .await?;
    let url = format!("http://127.0.0.1:{port}/base.qcow2");
    let fetched = cluster
        .cli_json(&["image", "import", "fetched", "--url", &url, "--pool", &pool])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(fetched["state"], "ready", "{fetched}");
    assert_eq!(fetched["sha256"], sha, "the fetched image is the file");
    for (url, says) in [
        (format!("http://127.0.0.1:{port}/nothing.qcow2"), "404"),
        ("https://127.0.0.1/x.qcow2".to_string(), "only http://"),
    ] {
        let out = cluster
            .cli(&["image", "import", "bad", "--url", &url, "--pool", &pool])
            .await?;
        assert!(
            !out.success && out.stderr.contains(says),
            "{url}: {}",
            out.stderr
        );
    }
    let out = cluster.cli(&["image", "delete", "fetched"]).await?;
    anyhow::ensure!(out.success, "image delete: {}", out.stderr);

    eprintln!("phase: a VM boots from a linked clone of the image");
    for (args, says) in [
        (
            vec![
                "vm",
                "create",
                "small",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--image",
                "base",
                "--pool",
                &pool,
                "--disk-size",
                "16M",
            ],
            "smaller than image",
        ),
        (
            vec![
                "vm",
                "create",
                "ghost",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--image",
                "nope",
                "--pool",
                &pool,
                "--disk-size",
                "1G",
            ],
            "Image \"nope\" not found",
        ),
    ] {
        let out = cluster.cli(&args).await?;
        assert!(!out.success, "{args:?} succeeded");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    let created = cluster
        .cli_json(&[
            "vm",
            "create",
            &vm,
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--image",
            "base",
            "--pool",
            &pool,
        ])
        .await
        .map_err(anyhow::Error::msg)?;
    let disk: &Value = &created["disks"][0];
    assert_eq!(disk["image"], "base", "{created}");
    assert_eq!(
        disk["size_bytes"],
        32u64 << 20,
        "the clone is the image's size"
    );
    let boot = disk["volume"].as_str().unwrap_or_default().to_string();
    wait_vm(&cluster, &vm, "running").await?;
    let overlay = dir.path().join(&boot);
    let info: Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", "-U", overlay.to_str().unwrap()],
    )?)?;
    assert_eq!(
        info["backing-filename"].as_str(),
        dir.path().join(&volume).to_str(),
        "{info}"
    );
    run(
        "qemu-io",
        &[
            "-r",
            "-U",
            "-f",
            "qcow2",
            "-c",
            "read -P 0x5a 0 1M",
            overlay.to_str().unwrap(),
        ],
    )?;

    eprintln!("phase: a running VM's disk grows online: QEMU grows the image under the guest");
    let out = cluster
        .cli(&["vm", "disk", "resize", &vm, "0", "--size", "40M"])
        .await?;
    anyhow::ensure!(out.success, "online resize: {}", out.stderr);
    let info: Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", "-U", overlay.to_str().unwrap()],
    )?)?;
    assert_eq!(info["virtual-size"], 40u64 << 20, "grown online: {info}");

    eprintln!("phase: a stopped VM's disks are added, grown and removed");
    let out = cluster
        .cli(&["vm", "disk", "add", &vm, "--size", "8M"])
        .await?;
    assert!(
        !out.success && out.stderr.contains("stop it"),
        "a disk was added to a running VM: {}",
        out.stderr
    );
    let out = cluster.cli(&["vm", "stop", &vm]).await?;
    anyhow::ensure!(out.success, "vm stop: {}", out.stderr);
    wait_vm(&cluster, &vm, "shut off").await?;
    let grown = cluster
        .cli_json(&["vm", "disk", "add", &vm, "--size", "8M"])
        .await
        .map_err(anyhow::Error::msg)?;
    let added = dir
        .path()
        .join(grown["disks"][1]["volume"].as_str().unwrap_or("?"));
    let out = cluster
        .cli(&["vm", "disk", "resize", &vm, "0", "--size", "48M"])
        .await?;
    anyhow::ensure!(out.success, "resize: {}", out.stderr);
    let out = cluster
        .cli(&["vm", "disk", "resize", &vm, "0", "--size", "36M"])
        .await?;
    assert!(
        !out.success && out.stderr.contains("only grow"),
        "{}",
        out.stderr
    );
    let out = cluster.cli(&["vm", "start", &vm]).await?;
    anyhow::ensure!(out.success, "vm start: {}", out.stderr);
    wait_vm(&cluster, &vm, "running").await?;
    let size = |path: &Path| -> anyhow::Result<u64> {
        let info: Value = serde_json::from_str(&run(
            "qemu-img",
            &["info", "--output=json", "-U", path.to_str().unwrap()],
        )?)?;
        info["virtual-size"].as_u64().context("virtual-size")
    };
    assert_eq!(size(&added)?, 8 << 20, "the added disk");
    assert_eq!(size(&overlay)?, 48 << 20, "the grown boot disk");
    let out = cluster.cli(&["vm", "stop", &vm]).await?;
    anyhow::ensure!(out.success, "vm stop: {}", out.stderr);
    wait_vm(&cluster, &vm, "shut off").await?;
    let out = cluster.cli(&["vm", "disk", "remove", &vm, "1"]).await?;
    anyhow::ensure!(out.success, "disk remove: {}", out.stderr);
    wait_until("the removed disk's volume to go", WAIT, || async {
        Ok((!added.exists()).then_some(()))
    })
    .await?;

    eprintln!("phase: the image stays while a disk is its clone");
    let out = cluster.cli(&["image", "delete", "base"]).await?;
    assert!(!out.success, "deleted an image in use");
    assert!(out.stderr.contains(&vm), "{}", out.stderr);

    eprintln!("phase: a VM deleted with --keep-disks leaves its volume");
    let kept = format!("{vm}-kept");
    let made = cluster
        .cli_json(&[
            "vm",
            "create",
            &kept,
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--pool",
            &pool,
            "--disk-size",
            "16M",
        ])
        .await
        .map_err(anyhow::Error::msg)?;
    let kept_volume = dir
        .path()
        .join(made["disks"][0]["volume"].as_str().unwrap_or("?"));
    wait_vm(&cluster, &kept, "running").await?;
    let out = cluster
        .cli(&["vm", "delete", &kept, "--keep-disks"])
        .await?;
    anyhow::ensure!(out.success, "vm delete --keep-disks: {}", out.stderr);
    wait_vm_gone(&cluster, &kept).await?;
    assert!(kept_volume.exists(), "--keep-disks deleted the volume");
    std::fs::remove_file(&kept_volume)?;

    eprintln!("phase: with the VM gone, deleting the image removes its volume");
    let out = cluster.cli(&["vm", "delete", &vm]).await?;
    anyhow::ensure!(out.success, "vm delete: {}", out.stderr);
    wait_vm_gone(&cluster, &vm).await?;
    assert!(!overlay.exists(), "the clone outlived its VM");
    let out = cluster.cli(&["image", "delete", "base"]).await?;
    anyhow::ensure!(out.success, "image delete: {}", out.stderr);
    wait_no_images(&cluster).await?;
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    Ok(())
}
