//! Live migration with local disks (issue 11, point 8), on two real libvirt hosts that
//! each have their own files at one path (a local pool, as on hosts with their own
//! disks) and share another directory (the image pool). The test guest boots a clone of
//! the image, with a data disk and a cloud-init seed, all in the local pool, and writes a
//! marker to its data disk. `drover vm migrate` moves it to the other host and back: each
//! time the destination's volumes are created first and copied with the memory, the
//! source's are deleted afterwards, and the marker is intact on the copy. A drain of its
//! host then moves it live the same way. Restarted where it ended, the guest finds its
//! marker (boot 2). The never-twice sampler reads both hosts' libvirt throughout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{guest, libvirt_hosts::LibvirtHosts, require, system_libvirt, Sampler};
use serde_json::Value;

/// The guest boots in about 4 s under TCG; a loaded CI machine may take several times that.
const BOOT: Duration = Duration::from_secs(90);
/// A migration copies a few MiB of disk and the guest's memory over loopback.
const MIGRATION: Duration = Duration::from_secs(120);

/// The VM's volumes (disks, then the seed) as host `host`'s own files.
fn files_on(local: &Path, host: &str, volumes: &[String]) -> Vec<PathBuf> {
    volumes.iter().map(|v| local.join(host).join(v)).collect()
}

/// Asserts the VM's volumes are all on `host`'s own disk, and waits for `other`'s copies
/// to be deleted (hostd deletes them right after it reported the migration done).
async fn assert_volumes_on(
    local: &Path,
    host: &str,
    other: &str,
    volumes: &[String],
) -> anyhow::Result<()> {
    for f in files_on(local, host, volumes) {
        assert!(f.exists(), "{} is missing", f.display());
    }
    let left = files_on(local, other, volumes);
    drover_chaos_tests::wait_until(
        "the source's copies deleted",
        Duration::from_secs(30),
        || {
            let behind: Vec<String> = left
                .iter()
                .filter(|f| f.exists())
                .map(|f| f.display().to_string())
                .collect();
            async move {
                if behind.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("left behind: {behind:?}"))
                }
            }
        },
    )
    .await
}

async fn migrate(rig: &Rig, args: &[&str]) -> anyhow::Result<Value> {
    let mut cmd = vec!["vm", "migrate"];
    cmd.extend(args);
    cmd.push("--detach");
    let op = rig.json(&cmd).await?;
    let id = op["id"].as_u64().context("operation id")?;
    let done = rig.op_end(id, MIGRATION).await?;
    anyhow::ensure!(done["state"] == "succeeded", "migration {args:?}: {done}");
    Ok(done)
}

/// Two libvirt hosts, each with its own files at one path, and the pool "local" there;
/// `None` (after the skip rule) where the machine cannot run them or build the guest.
async fn local_rig() -> anyhow::Result<Option<(Rig, tempfile::TempDir, PathBuf)>> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(None);
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(None);
    };
    let local = system_libvirt::pool_dir("drover-local")?;
    let rig = Rig::start_with_local(2, &["--domain-type", "qemu"], Some(local.path())).await?;
    let path = LibvirtHosts::local_path(local.path());
    let path = path.to_str().context("utf-8")?;
    rig.json(&["pool", "create", "local", "--path", path, "--wait", "30s"])
        .await?;
    Ok(Some((rig, local, image)))
}

/// Creates VM `name` booting a clone of image "guest", with a 16 MiB data disk, both in
/// pool "local", and `extra` flags.
async fn create_clone(rig: &Rig, name: &str, extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = guest::create_args(name, "local", &["--disk", "16M"]);
    args.extend(extra);
    rig.json(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_with_local_disks_migrates_there_and_back_and_drains() -> anyhow::Result<()> {
    let Some((rig, local, image)) = local_rig().await? else {
        return Ok(());
    };
    let shared = system_libvirt::pool_dir("drover-shared")?;

    eprintln!("phase: an image on a shared pool, a VM cloned from it on a local pool");
    let path = shared.path().to_str().context("utf-8")?;
    rig.json(&[
        "pool", "create", "images", "--path", path, "--shared", "--wait", "30s",
    ])
    .await?;
    rig.import_image("guest", &image, "images").await?;
    let vm = create_clone(&rig, "mover", &["--hostname", "mover"]).await?;
    let mut volumes: Vec<String> = (0..2)
        .map(|i| vm["disks"][i]["volume"].as_str().unwrap_or("?").to_string())
        .collect();
    let instance = vm["cloud_init"]["instance_id"].as_str().context("seed")?;
    volumes.push(format!("{instance}-cidata.iso"));
    let mut host = rig.running(&["mover"]).await?["mover"].clone();
    let first = guest::wait_marker(
        "the guest's first boot to write its marker",
        &local.path().join(&host).join(&volumes[1]),
        BOOT,
        |m| m.first_boot.is_some(),
    )
    .await?;
    eprintln!("the guest on {host} wrote {first:?}");
    let sampler = Sampler::start_running(&rig.uris()).await?;

    for leg in ["there", "back"] {
        let other = if host == "h1" { "h2" } else { "h1" };
        eprintln!("phase: live migration {leg}, {host} -> {other}, copying the local disks");
        let done = migrate(&rig, &["mover", "--to", other]).await?;
        let moved = rig.vm("mover").await?;
        assert_eq!(moved["host"], other, "{moved}");
        assert_eq!(moved["observed_state"], "running", "{moved}");
        assert!(
            done["migration"]["data_total"].as_u64().unwrap_or(0) > 0,
            "progress reported: {done}"
        );
        assert_volumes_on(local.path(), other, &host, &volumes).await?;
        let copied = guest::marker(&local.path().join(other).join(&volumes[1]))
            .map_err(anyhow::Error::msg)?;
        assert_eq!(copied.first_boot, first.first_boot, "the data disk's copy");
        host = other.to_string();
    }

    eprintln!("phase: a drain of {host} moves the VM live with its disks");
    let other = if host == "h1" { "h2" } else { "h1" };
    let op = rig.json(&["host", "drain", &host, "--detach"]).await?;
    let done = rig
        .op_end(op["id"].as_u64().context("drain id")?, MIGRATION)
        .await?;
    anyhow::ensure!(done["state"] == "succeeded", "drain: {done}");
    assert_eq!(rig.vm("mover").await?["host"], other);
    assert_volumes_on(local.path(), other, &host, &volumes).await?;

    let samples = sampler.finish().await?;
    if let Some((s, vm)) = samples.twice() {
        panic!("{vm} ran on two hosts at once: {:?}", s.active);
    }

    eprintln!("phase: restarted on {other}, the guest finds the marker on its copied disk");
    for verb in ["stop", "start"] {
        let out = rig.cluster.cli(&["vm", verb, "mover"]).await?;
        anyhow::ensure!(out.success, "vm {verb}: {}", out.stderr);
        if verb == "stop" {
            drover_chaos_tests::wait_until("mover shut off", BOOT, || async {
                let v = rig.cluster.cli_json(&["vm", "get", "mover"]).await?;
                Ok((v["observed_state"] == "shut off").then_some(()))
            })
            .await?;
        }
    }
    let again = guest::wait_marker(
        "the restarted guest to find its marker",
        &local.path().join(other).join(&volumes[1]),
        BOOT,
        |m| m.boots.is_some(),
    )
    .await?;
    assert_eq!(again.first_boot, first.first_boot);
    assert_eq!(again.boots, Some(2), "{again:?}");
    assert_eq!(
        rig.vm("mover").await?["host"],
        other,
        "it stays with its disk"
    );
    Ok(())
}

/// Issue 11, point 2: an image in a pool its hosts do not share is copied to a host the
/// first time a clone of it starts or arrives there (the copy checked against the image's
/// checksum), and deleting the image deletes every copy before the image itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_image_is_copied_where_its_clone_goes_and_deleted_everywhere() -> anyhow::Result<()>
{
    let Some((rig, local, image)) = local_rig().await? else {
        return Ok(());
    };
    let img = rig.import_image("guest", &image, "local").await?;
    let (origin, img_volume) = (
        img["host"].as_str().context("image host")?.to_string(),
        img["volume"].as_str().context("image volume")?.to_string(),
    );
    let other_of = |h: &str| if h == "h1" { "h2" } else { "h1" }.to_string();
    let elsewhere = other_of(&origin);
    eprintln!("phase: the image is on {origin} only; a clone of it starts and moves");
    let vm = create_clone(&rig, "clone", &[]).await?;
    let data = vm["disks"][1]["volume"]
        .as_str()
        .context("data disk")?
        .to_string();
    let host = rig.running(&["clone"]).await?["clone"].clone();
    let first = guest::wait_marker(
        "the clone's first boot to write its marker",
        &local.path().join(&host).join(&data),
        BOOT,
        |m| m.first_boot.is_some(),
    )
    .await?;
    let to = other_of(&host);
    migrate(&rig, &["clone", "--to", &to]).await?;
    let copied = guest::marker(&local.path().join(&to).join(&data)).map_err(anyhow::Error::msg)?;
    assert_eq!(copied.first_boot, first.first_boot, "the data disk's copy");

    eprintln!("phase: {elsewhere} got a checked copy of the image, where the clone went");
    let img = rig.json(&["image", "get", "guest"]).await?;
    assert_eq!(img["copies"][&elsewhere], "ready", "{img}");
    assert_eq!(img["copies"].as_object().map(|c| c.len()), Some(1), "{img}");
    for h in ["h1", "h2"] {
        let f = local.path().join(h).join(&img_volume);
        assert!(f.exists(), "{} missing", f.display());
    }

    eprintln!("phase: the clone and the image deleted, no copy is left on any host");
    rig.json(&["vm", "delete", "clone"]).await?;
    drover_chaos_tests::wait_until("the clone gone", BOOT, || async {
        let out = rig
            .cluster
            .cli(&["vm", "get", "clone"])
            .await
            .map_err(|e| e.to_string())?;
        Ok((!out.success).then_some(()))
    })
    .await?;
    rig.json(&["image", "delete", "guest"]).await?;
    drover_chaos_tests::wait_until("the image and its copies gone", BOOT, || async {
        let images = rig.cluster.cli_json(&["image", "list"]).await?;
        let gone = images.as_array().is_some_and(|a| a.is_empty());
        Ok(gone.then_some(()))
    })
    .await?;
    for h in ["h1", "h2"] {
        let f = local.path().join(h).join(&img_volume);
        assert!(!f.exists(), "{} left behind", f.display());
    }
    Ok(())
}
