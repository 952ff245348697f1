//! Images through hostd on a real libvirt daemon (`qemu:///system`): UploadImage stores a
//! file in a pool through libvirt's volume upload, detects qcow2 and raw, and reports the
//! SHA-256 `sha256sum` computes; a qcow2 naming a backing file, a file that is not an
//! image, and a stream shorter than announced are refused with nothing left in the pool;
//! a VM's boot disk made with a backing volume is a qcow2 overlay on the image and reads
//! the image's bytes; DeleteVolume removes the image, and says so only once. On the test
//! driver, an upload is refused as unsupported. Needs the daemon (CI starts one; locally
//! the test skips with the reason).

mod common;

use std::path::Path;
use std::process::Command;

use common::hostd::Hostd;
use drover_chaos_tests::system_libvirt::{self, Leftovers};
use drover_proto::agent::v1::upload_image_chunk::Part;
use drover_proto::agent::v1::{
    DeleteVolumeRequest, EnsurePoolRequest, Fence, StartVmRequest, UploadImageChunk,
    UploadImageHeader, UploadedImage, VmDisk, VmRef, VolumeRef,
};
use tonic::{Code, Status};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256sum(path: &Path) -> String {
    let out = run("sha256sum", &[path.to_str().unwrap()]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Uploads `bytes` as `volume`, announcing `announce` bytes, in 256 KiB messages.
async fn upload(
    hostd: &mut Hostd,
    pool: &str,
    volume: &str,
    bytes: Vec<u8>,
    announce: u64,
) -> Result<UploadedImage, Status> {
    let mut messages = vec![UploadImageChunk {
        part: Some(Part::Header(UploadImageHeader {
            pool: pool.into(),
            volume: volume.into(),
            size_bytes: announce,
            term: 1,
        })),
    }];
    messages.extend(bytes.chunks(256 << 10).map(|c| UploadImageChunk {
        part: Some(Part::Data(c.to_vec())),
    }));
    hostd
        .client
        .upload_image(futures::stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_stored_checked_cloned_and_deleted() {
    if !common::prerequisite(system_libvirt::available()) {
        return;
    }
    let pid = std::process::id();
    let (vm, pool) = (format!("img-vm-{pid}"), format!("images-{pid}"));
    let _leftovers = Leftovers {
        domains: vec![vm.clone()],
        pools: vec![pool.clone()],
    };
    let dir = system_libvirt::pool_dir("drover-images").expect("pool dir");
    let path = dir.path().to_str().unwrap().to_string();
    let work = tempfile::tempdir().expect("work dir");
    let mut hostd = Hostd::start(
        "h1",
        system_libvirt::QEMU_SYSTEM.into(),
        tempfile::tempdir().unwrap(),
    )
    .await;
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

    eprintln!("phase: a qcow2 holding a marker is stored, detected and hashed");
    let src = work.path().join("src.qcow2");
    let src_s = src.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", src_s, "64M"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 0 1M", src_s],
    );
    let bytes = std::fs::read(&src).unwrap();
    let image = format!("image-base-{pid}");
    let got = upload(&mut hostd, &pool, &image, bytes.clone(), bytes.len() as u64)
        .await
        .expect("upload qcow2");
    assert_eq!(got.format, "qcow2");
    assert_eq!(got.virtual_bytes, 64 << 20);
    assert_eq!(got.file_bytes, bytes.len() as u64);
    assert_eq!(got.sha256, sha256sum(&src));
    assert_eq!(sha256sum(&dir.path().join(&image)), got.sha256);

    eprintln!("phase: a raw file is raw, its size the file's");
    let raw: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let got = upload(&mut hostd, &pool, "raw-one", raw.clone(), raw.len() as u64)
        .await
        .expect("upload raw");
    assert_eq!((got.format.as_str(), got.virtual_bytes), ("raw", 3 << 20));

    eprintln!("phase: refusals leave nothing in the pool");
    let with_backing = work.path().join("linked.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            src_s,
            "-F",
            "qcow2",
            with_backing.to_str().unwrap(),
        ],
    );
    let linked = std::fs::read(&with_backing).unwrap();
    let mut not_an_image = b"QFI\xfb".to_vec();
    not_an_image.extend(std::iter::repeat_n(0xffu8, 4096));
    let cases: [(&str, Vec<u8>, u64, &str); 3] = [
        (
            "bad-linked",
            linked.clone(),
            linked.len() as u64,
            "backing file",
        ),
        (
            "bad-header",
            not_an_image.clone(),
            not_an_image.len() as u64,
            "qemu-img info refused",
        ),
        (
            "bad-short",
            raw.clone(),
            raw.len() as u64 + 1,
            "ended after",
        ),
    ];
    for (volume, bytes, announce, says) in cases {
        let err = upload(&mut hostd, &pool, volume, bytes, announce)
            .await
            .expect_err(volume);
        assert_eq!(err.code(), Code::InvalidArgument, "{volume}: {err:?}");
        assert!(err.message().contains(says), "{volume}: {}", err.message());
        assert!(
            !dir.path().join(volume).exists(),
            "{volume} was left in the pool"
        );
    }
    let err = upload(&mut hostd, &pool, "raw-one", raw.clone(), raw.len() as u64)
        .await
        .expect_err("a second upload over an existing volume");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    eprintln!("phase: a boot disk backed by the image is an overlay that reads its bytes");
    let boot = format!("{vm}-1-disk0.qcow2");
    let disk = VmDisk {
        pool: pool.clone(),
        volume: boot.clone(),
        size_bytes: 128 << 20,
        format: "qcow2".into(),
        backing: Some(VolumeRef {
            pool: pool.clone(),
            volume: image.clone(),
            format: "qcow2".into(),
        }),
        create: false,
    };
    hostd
        .client
        .start_vm(StartVmRequest {
            name: vm.clone(),
            vcpus: 1,
            memory_mib: 64,
            fence: Some(Fence {
                term: 1,
                generation: 1,
            }),
            disks: vec![disk.clone()],
            create_volumes: true,
            ..Default::default()
        })
        .await
        .expect("StartVm with a clone");
    let overlay = dir.path().join(&boot);
    let info: serde_json::Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", "-U", overlay.to_str().unwrap()],
    ))
    .expect("qemu-img json");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 128u64 << 20);
    assert_eq!(
        info["backing-filename"].as_str(),
        Some(dir.path().join(&image).to_str().unwrap()),
        "{info}"
    );
    // The guest's disk shows the image's bytes (read only, beside the running QEMU).
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
    );
    hostd
        .client
        .undefine_vm(VmRef {
            name: vm.clone(),
            fence: Some(Fence {
                term: 1,
                generation: 1,
            }),
            delete_disks: vec![disk],
            ..Default::default()
        })
        .await
        .expect("UndefineVm");
    assert!(!overlay.exists(), "the clone outlived its VM");
    assert!(
        dir.path().join(&image).exists(),
        "the image went with the clone"
    );

    eprintln!("phase: DeleteVolume removes the image once");
    for expect in [true, false] {
        let resp = hostd
            .client
            .delete_volume(DeleteVolumeRequest {
                pool: pool.clone(),
                volume: image.clone(),
                term: 1,
            })
            .await
            .expect("DeleteVolume")
            .into_inner();
        assert_eq!(resp.existed, expect);
    }
    assert!(!dir.path().join(&image).exists());
}

/// libvirt's test driver keeps volumes in memory and cannot take their bytes: an upload
/// is refused as the host's limit, not as a bad file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_driver_refuses_uploads_as_unsupported() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd =
        Hostd::start("h1", "test:///default".into(), tempfile::tempdir().unwrap()).await;
    // The test driver's pools accept any path; its default pool's is /default-pool.
    let pool = format!("tst-{}", std::process::id());
    hostd
        .client
        .ensure_pool(EnsurePoolRequest {
            name: pool.clone(),
            r#type: "dir".into(),
            path: "/tmp".into(),
            term: 1,
        })
        .await
        .expect("EnsurePool");
    let err = upload(&mut hostd, &pool, "img", vec![0u8; 4096], 4096)
        .await
        .expect_err("test driver upload");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("cannot store"), "{}", err.message());
}
