//! VM disks through hostd on a real libvirt daemon (`qemu:///system`, QEMU under KVM or
//! TCG): StartVm creates each volume in its pool as thin qcow2 of the asked size and
//! attaches it virtio with cache='none'; a start with a pool not set up here is refused
//! naming it; a VM that has run before is refused rather than given an empty volume in
//! place of a missing one; UndefineVm deletes the volumes with the domain, and again when
//! the domain is already gone. A cloud-init seed is built into the boot disk's pool,
//! attached read-only after the disks, and deleted with them. Needs the daemon (CI starts one; locally the test skips with the reason).

mod common;

use std::process::Command;

use common::hostd::Hostd;
use drover_chaos_tests::system_libvirt::{self, Leftovers, QEMU_SYSTEM as URI};
use drover_proto::agent::v1::{
    CloudInitSeed, EnsurePoolRequest, Fence, StartVmRequest, VmDisk, VmRef,
};
use tonic::Code;
use virt::connect::Connect;

fn disk(pool: &str, volume: &str, size_bytes: u64) -> VmDisk {
    VmDisk {
        pool: pool.into(),
        volume: volume.into(),
        size_bytes,
        format: "qcow2".into(),
        backing: None,
        create: false,
    }
}

fn fence(generation: u64) -> Option<Fence> {
    Some(Fence {
        term: 1,
        generation,
    })
}

/// `qemu-img info` of `path`: (format, virtual size).
fn image_info(path: &std::path::Path) -> (String, u64) {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    (
        v["format"].as_str().unwrap_or_default().to_string(),
        v["virtual-size"].as_u64().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_created_attached_and_deleted_with_the_vm() {
    if !common::prerequisite(system_libvirt::available()) {
        return;
    }
    let pid = std::process::id();
    let (vm, pool) = (format!("disk-vm-{pid}"), format!("disks-{pid}"));
    let _leftovers = Leftovers {
        domains: vec![vm.clone()],
        pools: vec![pool.clone()],
    };
    let dir = system_libvirt::pool_dir("drover-disks").expect("pool dir");
    let path = dir.path().to_str().unwrap().to_string();
    let mut hostd = Hostd::start("h1", URI.into(), tempfile::tempdir().unwrap()).await;
    hostd
        .client
        .ensure_pool(EnsurePoolRequest {
            name: pool.clone(),
            r#type: "dir".into(),
            path: path.clone(),
            term: 1,
        })
        .await
        .expect("EnsurePool");
    let (boot, data) = (format!("{vm}-1-disk0.qcow2"), format!("{vm}-1-disk1.qcow2"));
    let disks = vec![disk(&pool, &boot, 64 << 20), disk(&pool, &data, 32 << 20)];

    eprintln!("phase: a pool not set up here is refused by name, and nothing is created");
    let err = hostd
        .client
        .start_vm(StartVmRequest {
            name: vm.clone(),
            vcpus: 1,
            memory_mib: 64,
            fence: fence(1),
            disks: vec![disk("nowhere", &boot, 64 << 20)],
            ..Default::default()
        })
        .await
        .expect_err("unknown pool");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("nowhere"), "{}", err.message());
    assert!(hostd.list().await.iter().all(|d| d.name != vm));

    eprintln!("phase: a VM that has run before is never given an empty disk in its place");
    let err = hostd
        .client
        .start_vm(StartVmRequest {
            name: vm.clone(),
            vcpus: 1,
            memory_mib: 64,
            fence: fence(2),
            disks: disks.clone(),
            create_volumes: false,
            ..Default::default()
        })
        .await
        .expect_err("missing volume of a VM that ran");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&boot) && err.message().contains("missing"),
        "{}",
        err.message()
    );
    assert!(
        !dir.path().join(&boot).exists(),
        "a volume was created anyway"
    );

    eprintln!(
        "phase: StartVm creates both volumes and the cloud-init seed and boots with them attached"
    );
    let seed_volume = format!("{vm}-1-cidata.iso");
    let seed = CloudInitSeed {
        volume: seed_volume.clone(),
        instance_id: format!("{vm}-1"),
        hostname: "disk-guest".into(),
        user_data: "#cloud-config\nruncmd: [true]\n".into(),
        ssh_keys: vec!["ssh-ed25519 AAAA test@drover".into()],
    };
    let started = hostd
        .client
        .start_vm(StartVmRequest {
            name: vm.clone(),
            vcpus: 1,
            memory_mib: 64,
            fence: fence(2),
            disks: disks.clone(),
            create_volumes: true,
            seed: Some(seed),
            ..Default::default()
        })
        .await
        .expect("StartVm")
        .into_inner();
    assert_eq!(started.name, vm);
    assert_eq!(
        image_info(&dir.path().join(&boot)),
        ("qcow2".into(), 64 << 20)
    );
    assert_eq!(
        image_info(&dir.path().join(&data)),
        ("qcow2".into(), 32 << 20)
    );
    let xml = Connect::open(Some(URI))
        .and_then(|c| c.lookup_domain_by_name(&vm))
        .and_then(|d| d.xml_desc(0))
        .expect("domain xml");
    assert!(xml.contains(&format!("{path}/{boot}")), "{xml}");
    assert_eq!(xml.matches("cache='none'").count(), 2, "{xml}");
    assert!(xml.contains("<target dev='vda' bus='virtio'/>"), "{xml}");
    // The seed: an ISO9660 volume labelled cidata in the boot disk's pool, read-only third.
    let iso = std::fs::read(dir.path().join(&seed_volume)).expect("seed volume");
    assert_eq!(&iso[0x8001..0x8006], b"CD001", "an ISO9660 image");
    assert_eq!(&iso[0x8028..0x802e], b"cidata", "labelled cidata");
    assert!(
        String::from_utf8_lossy(&iso).contains(&format!("\"instance-id\":\"{vm}-1\"")),
        "its meta-data names the instance"
    );
    let seed_disk = &xml[xml.find(&seed_volume).expect("seed attached")..];
    let seed_disk = &seed_disk[..seed_disk.find("</disk>").unwrap()];
    assert!(
        seed_disk.contains("<readonly/>") && seed_disk.contains("dev='vdc'"),
        "{xml}"
    );

    eprintln!("phase: deleting a volume in a pool not set up here is refused, not skipped");
    let err = hostd
        .client
        .undefine_vm(VmRef {
            name: format!("{vm}-other"),
            fence: fence(2),
            delete_disks: vec![disk("nowhere", &boot, 64 << 20)],
            ..Default::default()
        })
        .await
        .expect_err("a pool not here");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    eprintln!("phase: UndefineVm deletes the volumes with the domain, and repeats harmlessly");
    let mut doomed = disks.clone();
    // As the controller sends a seed: only its pool and name matter.
    doomed.push(VmDisk {
        pool: pool.clone(),
        volume: seed_volume.clone(),
        format: "raw".into(),
        ..Default::default()
    });
    let undefine = VmRef {
        name: vm.clone(),
        fence: fence(2),
        delete_disks: doomed,
        ..Default::default()
    };
    let existed = hostd
        .client
        .undefine_vm(undefine.clone())
        .await
        .expect("UndefineVm")
        .into_inner()
        .existed;
    assert!(existed);
    assert!(!dir.path().join(&boot).exists() && !dir.path().join(&data).exists());
    assert!(!dir.path().join(&seed_volume).exists(), "the seed goes too");
    // A volume left by a start that failed after creating it goes the same way.
    std::fs::write(dir.path().join("leftover.qcow2"), b"").unwrap();
    let leftover = VmRef {
        delete_disks: vec![disk(&pool, "leftover.qcow2", 1 << 20)],
        ..undefine
    };
    hostd
        .client
        .ensure_pool(EnsurePoolRequest {
            name: pool.clone(),
            r#type: "dir".into(),
            path: path.clone(),
            term: 1,
        })
        .await
        .expect("refresh the pool so libvirt sees the file");
    let existed = hostd
        .client
        .undefine_vm(leftover)
        .await
        .expect("UndefineVm without a domain")
        .into_inner()
        .existed;
    assert!(!existed);
    assert!(!dir.path().join("leftover.qcow2").exists());
    hostd.shutdown().await;
}
