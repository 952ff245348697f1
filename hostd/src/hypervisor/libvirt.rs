//! [`Hypervisor`] on libvirt through the `virt` crate: the implementation hostd ships.
//!
//! Owns the process's libvirt connection ([`LibvirtConn`]): one at a time, reopened after
//! libvirtd restarts. Every call goes through [`LibvirtHypervisor::call`], which tells the
//! connection when a call failed so that a dead one is replaced.

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

use super::domain_xml::{self, DomainType, Marker, DROVER_NS};
use super::libvirt_conn::LibvirtConn;
use super::libvirt_console;
use super::libvirt_migrate;
use super::libvirt_network;
use super::libvirt_nics;
use super::libvirt_nwfilter;
use super::libvirt_pool::{self, Refreshed};
use super::{
    Console, HostCapacity, Hypervisor, JobStats, ManagedDomain, ManagedPool, MigrationRequest,
    PowerState, UploadChunks, VmDisk, VmSpec,
};
use crate::error::HostdError;

/// Drives one host's domains through one libvirt connection.
pub struct LibvirtHypervisor {
    conn: LibvirtConn,
    /// Decided once, before opening, so every domain on this host gets the same.
    domain_type: DomainType,
    /// When each storage pool's space was last re-read.
    pools_refreshed: Refreshed,
    /// Whether VLAN networks can be wired here, probed once.
    vlan_links: std::sync::OnceLock<bool>,
}

/// What a name refers to on this host, from hostd's point of view.
enum Lookup {
    Missing,
    /// Someone else's domain: never listed, never touched.
    Foreign,
    Managed(Domain, Marker),
}

impl LibvirtHypervisor {
    /// Opens the connection; every domain defined through it gets `domain_type` (settled
    /// by `domain_type::probe`). Blocks; call it from a blocking thread.
    pub fn open(uri: &str, domain_type: DomainType) -> Result<LibvirtHypervisor, HostdError> {
        // libvirt's default error handler prints every failed call to stderr, including the
        // expected ones ("domain not found"); hostd reports errors itself.
        virt::error::clear_error_callback();
        Ok(LibvirtHypervisor {
            conn: LibvirtConn::open(uri)?,
            domain_type,
            pools_refreshed: Refreshed::default(),
            vlan_links: std::sync::OnceLock::new(),
        })
    }

    /// Runs `f` on the current connection (reopened first if it was lost); a libvirt
    /// failure lets the connection check whether it died.
    fn call<T>(&self, f: impl FnOnce(&Connect) -> Result<T, HostdError>) -> Result<T, HostdError> {
        let (conn, epoch) = self.conn.get()?;
        let result = f(&conn);
        if let Err(HostdError::Libvirt { .. }) = &result {
            self.conn.failed(&conn, epoch);
        }
        result
    }
}

fn lookup(conn: &Connect, name: &str) -> Result<Lookup, HostdError> {
    let dom = match conn.lookup_domain_by_name(name) {
        Ok(dom) => dom,
        Err(e) if is(&e, ErrorNumber::NoDomain) => return Ok(Lookup::Missing),
        Err(e) => return Err(HostdError::libvirt("lookup_domain_by_name")(e)),
    };
    Ok(match marker(&dom)? {
        Some(marker) => Lookup::Managed(dom, marker),
        None => Lookup::Foreign,
    })
}

/// The managed domain of that name; foreign domains are as good as absent here.
fn managed(conn: &Connect, name: &str) -> Result<(Domain, Marker), HostdError> {
    match lookup(conn, name)? {
        Lookup::Managed(dom, marker) => Ok((dom, marker)),
        Lookup::Missing | Lookup::Foreign => Err(HostdError::NotFound {
            name: name.to_string(),
        }),
    }
}

impl LibvirtHypervisor {
    fn define_and_create(
        &self,
        conn: &Connect,
        spec: &VmSpec,
        uuid: Option<&str>,
    ) -> Result<ManagedDomain, HostdError> {
        let paths = spec
            .disks
            .iter()
            .map(|d| libvirt_pool::ensure_volume(conn, d, spec.create_volumes || d.create))
            .collect::<Result<Vec<_>, _>>()?;
        let seed = match (&spec.seed, spec.disks.first()) {
            (Some(seed), Some(boot)) => Some(libvirt_pool::ensure_seed(conn, &boot.pool, seed)?),
            (Some(_), None) => {
                return Err(HostdError::InvalidArgument(
                    "a cloud-init seed needs a boot disk (it lives in its pool)".into(),
                ))
            }
            (None, _) => None,
        };
        let xml = domain_xml::build(spec, self.domain_type, uuid, &paths, seed.as_deref());
        let dom = conn
            .define_domain_xml(&xml)
            .map_err(HostdError::libvirt("define_domain_xml"))?;
        // A failed start leaves the domain defined and shut off; a retried StartVm redefines
        // and starts it, so there is nothing to roll back.
        dom.create().map_err(HostdError::libvirt("create"))?;
        if self.domain_type != DomainType::Test {
            pin_overlay_taps(&dom, &spec.name);
        }
        describe(
            &dom,
            &spec.name,
            Marker {
                generation: spec.generation,
                term: spec.term,
                ha: spec.ha,
            },
        )
    }
}

/// Pins a started domain's overlay taps (`network::taps`). A failure costs reachability
/// until the guest sends, not the start: logged.
fn pin_overlay_taps(dom: &virt::domain::Domain, vm: &str) {
    let pinned = dom
        .xml_desc(0)
        .map_err(HostdError::libvirt("xml_desc"))
        .and_then(|xml| crate::network::taps::pin(&crate::network::taps::taps_in(&xml)));
    if let Err(e) = pinned {
        tracing::warn!(vm, error = %crate::error::error_chain(&e), "cannot pin the guest's taps on its overlay bridges");
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn define_and_start(&self, spec: &VmSpec) -> Result<ManagedDomain, HostdError> {
        self.call(|conn| match lookup(conn, &spec.name)? {
            Lookup::Foreign => Err(HostdError::NotManaged {
                name: spec.name.clone(),
            }),
            Lookup::Managed(dom, marker) => {
                if is_active(&dom)? {
                    // Already running. An older generation was refused by the service before
                    // this point; the same one is a repeat. A newer one means an old copy
                    // still runs here: the leader destroys stale copies (actors'
                    // `host::stale`) and starts the VM afresh, so nothing is redefined here.
                    return describe(&dom, &spec.name, marker);
                }
                let uuid = dom
                    .uuid_string()
                    .map_err(HostdError::libvirt("uuid_string"))?;
                self.define_and_create(conn, spec, Some(&uuid))
            }
            Lookup::Missing => self.define_and_create(conn, spec, None),
        })
    }

    fn shutdown(&self, name: &str) -> Result<ManagedDomain, HostdError> {
        self.call(|conn| {
            let (dom, marker) = managed(conn, name)?;
            if is_active(&dom)? {
                if let Err(e) = dom.shutdown() {
                    // It may have stopped between the check and the call; that is success.
                    if is_active(&dom)? {
                        return Err(HostdError::libvirt("shutdown")(e));
                    }
                }
            }
            describe(&dom, name, marker)
        })
    }

    fn destroy(&self, name: &str) -> Result<ManagedDomain, HostdError> {
        self.call(|conn| {
            let (dom, marker) = managed(conn, name)?;
            power_off(&dom)?;
            describe(&dom, name, marker)
        })
    }

    fn undefine(&self, name: &str, volumes: &[VmDisk]) -> Result<bool, HostdError> {
        let existed = self.call(|conn| {
            let dom = match lookup(conn, name)? {
                Lookup::Managed(dom, _) => dom,
                Lookup::Missing | Lookup::Foreign => return Ok(false),
            };
            power_off(&dom)?;
            // Leftover managed-save images or snapshot metadata would make a plain undefine
            // fail; neither is anything drover wants to keep once the VM is deleted.
            let flags =
                sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
            match dom.undefine_flags(flags) {
                Ok(()) => Ok(true),
                // A transient domain disappears on destroy; it existed all the same.
                Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(true),
                Err(e) => Err(HostdError::libvirt("undefine")(e)),
            }
        })?;
        // After the domain, never before: a volume must not vanish under a running guest.
        // Also when there was no domain: a start that failed after creating them.
        self.call(|conn| {
            volumes
                .iter()
                .try_for_each(|v| libvirt_pool::delete_volume(conn, v))
        })?;
        Ok(existed)
    }

    fn list_managed(&self) -> Result<Vec<ManagedDomain>, HostdError> {
        self.call(list_managed)
    }

    fn domain(&self, name: &str) -> Result<Option<ManagedDomain>, HostdError> {
        self.call(|conn| match lookup(conn, name)? {
            Lookup::Managed(dom, marker) => describe(&dom, name, marker).map(Some),
            Lookup::Missing | Lookup::Foreign => Ok(None),
        })
    }

    fn host_info(&self) -> Result<HostCapacity, HostdError> {
        self.call(|conn| {
            let node = conn.node_info().map_err(HostdError::libvirt("node_info"))?;
            let hypervisor = conn
                .driver_type()
                .map_err(HostdError::libvirt("driver_type"))?;
            Ok(HostCapacity {
                vcpus: node.cpus,
                memory_mib: node.memory / 1024,
                hypervisor,
            })
        })
    }

    fn migrate(&self, req: &MigrationRequest) -> Result<JobStats, HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, &req.name)?;
            if !is_active(&dom)? {
                return Err(HostdError::InvalidArgument(format!(
                    "domain {} is not running; only a running domain is live-migrated",
                    req.name
                )));
            }
            Ok(())
        })?;
        // The migrate call runs for seconds on a connection of its own: sharing the main
        // connection with it, job-stat queries and heartbeats were seen to block until the
        // migration ended (a query sent during the peer-to-peer handshake, most often).
        // Migration needs a real daemon, where a second connection sees the same domains.
        let uri = self.conn.uri();
        let conn = Connect::open(Some(uri)).map_err(|source| HostdError::Connect {
            uri: uri.to_string(),
            source,
        })?;
        let own = conn
            .lookup_domain_by_name(&req.name)
            .map_err(HostdError::libvirt("lookup_domain_by_name"))?;
        libvirt_migrate::migrate(&own, req)
    }

    fn job_stats(&self, name: &str) -> Result<Option<JobStats>, HostdError> {
        self.call(|conn| match lookup(conn, name)? {
            Lookup::Managed(dom, _) => libvirt_migrate::job_stats(&dom),
            Lookup::Missing | Lookup::Foreign => Ok(None),
        })
    }

    fn abort_job(&self, name: &str) -> Result<bool, HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, name)?;
            libvirt_migrate::abort_job(&dom)
        })
    }

    fn ensure_network(&self, wiring: &crate::network::NetworkWiring) -> Result<String, HostdError> {
        let kernel = self.domain_type != DomainType::Test;
        self.call(|conn| {
            // Every guest's NIC on a network here may name it (security groups), also
            // one arriving by migration, whose destination is wired first. Not fatal to
            // the network: a guest that needs the filter fails to start with the reason.
            if kernel {
                if let Err(e) = libvirt_nwfilter::ensure(conn) {
                    tracing::warn!(error = %crate::error::error_chain(&e), "cannot define the security group filter");
                }
            }
            libvirt_network::ensure(conn, wiring, kernel)
        })
    }

    fn remove_network(&self, name: &str) -> Result<bool, HostdError> {
        let kernel = self.domain_type != DomainType::Test;
        self.call(|conn| libvirt_network::remove(conn, name, kernel))
    }

    fn list_networks(&self) -> Result<Vec<String>, HostdError> {
        self.call(libvirt_network::list)
    }

    fn makes_vlan_links(&self) -> bool {
        *self.vlan_links.get_or_init(|| {
            self.domain_type == DomainType::Test || crate::network::kernel_makes_vlans()
        })
    }

    fn host_links(&self) -> Result<std::collections::BTreeSet<String>, HostdError> {
        if self.domain_type != DomainType::Test {
            return crate::network::host_links().map_err(HostdError::HostLinks);
        }
        // The test driver's host is fictional, and so are its interfaces (`eth1`).
        self.call(|conn| {
            let names = conn
                .list_interfaces()
                .map_err(HostdError::libvirt("list_interfaces"))?;
            Ok(names.into_iter().collect())
        })
    }

    fn ensure_pool(&self, name: &str, path: &str) -> Result<ManagedPool, HostdError> {
        self.call(|conn| libvirt_pool::ensure(conn, &self.pools_refreshed, name, path))
    }

    fn remove_pool(&self, name: &str) -> Result<bool, HostdError> {
        self.call(|conn| libvirt_pool::remove(conn, &self.pools_refreshed, name))
    }

    fn list_pools(&self) -> Result<Vec<ManagedPool>, HostdError> {
        self.call(|conn| libvirt_pool::list(conn, &self.pools_refreshed))
    }

    fn upload_volume(
        &self,
        pool: &str,
        volume: &str,
        size_bytes: u64,
        data: UploadChunks<'_>,
    ) -> Result<String, HostdError> {
        self.call(|conn| libvirt_pool::upload(conn, pool, volume, size_bytes, data))
    }

    fn read_volume(
        &self,
        pool: &str,
        volume: &str,
        out: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<(), HostdError> {
        self.call(|conn| libvirt_pool::download(conn, pool, volume, out))
    }

    fn delete_volume(&self, pool: &str, volume: &str) -> Result<bool, HostdError> {
        self.call(|conn| libvirt_pool::delete_named(conn, pool, volume))
    }

    fn grow_disk(&self, name: &str, index: usize, disk: &VmDisk) -> Result<bool, HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, name)?;
            if is_active(&dom)? {
                let target = domain_xml::disk_target(index);
                let now = dom
                    .block_info(&target, 0)
                    .map_err(HostdError::libvirt("block_info"))?
                    .capacity;
                // Disks only grow: a smaller size is an old request, never carried out.
                if disk.size_bytes < now {
                    return Err(HostdError::InvalidArgument(format!(
                        "disk {target} is {now} bytes; {} would shrink it",
                        disk.size_bytes
                    )));
                }
                if disk.size_bytes > now {
                    block_resize(&dom, &target, disk.size_bytes)?;
                }
                Ok(true)
            } else {
                // Off: the volume grows now (the next start would do it anyway).
                libvirt_pool::ensure_volume(conn, disk, false)?;
                Ok(false)
            }
        })
    }

    fn plug_nic(&self, name: &str, nic: &crate::network::VmNic) -> Result<bool, HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, name)?;
            if !is_active(&dom)? {
                return Ok(false);
            }
            libvirt_nics::plug(&dom, nic)?;
            pin_overlay_taps(&dom, name);
            Ok(true)
        })
    }

    fn unplug_nic(&self, name: &str, mac: &str) -> Result<(), HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, name)?;
            if is_active(&dom)? {
                libvirt_nics::unplug(&dom, name, mac)?;
            }
            Ok(())
        })
    }

    fn update_nic_filters(
        &self,
        name: &str,
        nics: &[crate::network::VmNic],
    ) -> Result<bool, HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, name)?;
            if !is_active(&dom)? {
                return Ok(false);
            }
            if self.domain_type != DomainType::Test {
                libvirt_nwfilter::ensure(conn)?;
            }
            libvirt_nics::update_filters(&dom, nics)?;
            Ok(true)
        })
    }

    fn open_console(&self, name: &str) -> Result<Box<dyn Console>, HostdError> {
        self.call(|conn| {
            let (dom, _) = managed(conn, name)?;
            if !is_active(&dom)? {
                return Err(HostdError::NotRunning {
                    name: name.to_string(),
                });
            }
            Ok(Box::new(libvirt_console::open(conn, &dom)?) as Box<dyn Console>)
        })
    }

    fn probe(&self) -> Result<(), HostdError> {
        // A real round trip to the daemon (for remote URIs an RPC): it fails once libvirtd
        // is gone, which is what lets the connection notice and reopen.
        self.call(|conn| {
            conn.lib_version()
                .map(drop)
                .map_err(HostdError::libvirt("lib_version"))
        })
    }
}

fn list_managed(conn: &Connect) -> Result<Vec<ManagedDomain>, HostdError> {
    let all = conn
        .list_all_domains(0)
        .map_err(HostdError::libvirt("list_all_domains"))?;
    let mut managed = Vec::new();
    for dom in all {
        // Domains can vanish between the listing and the next call; skip those.
        let marker = match marker(&dom) {
            Ok(Some(marker)) => marker,
            Ok(None) => continue,
            Err(HostdError::Libvirt { source, .. }) if is(&source, ErrorNumber::NoDomain) => {
                continue
            }
            Err(e) => return Err(e),
        };
        let name = match dom.name() {
            Ok(name) => name,
            Err(e) if is(&e, ErrorNumber::NoDomain) => continue,
            Err(e) => return Err(HostdError::libvirt("name")(e)),
        };
        match describe(&dom, &name, marker) {
            Ok(domain) => managed.push(domain),
            Err(HostdError::Libvirt { source, .. }) if is(&source, ErrorNumber::NoDomain) => {}
            Err(e) => return Err(e),
        }
    }
    managed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(managed)
}

/// drover's marker on `dom`, if it carries one.
fn marker(dom: &Domain) -> Result<Option<Marker>, HostdError> {
    match dom.metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(DROVER_NS), 0) {
        Ok(xml) => Ok(domain_xml::parse_metadata_element(&xml)),
        Err(e) if is(&e, ErrorNumber::NoDomainMetadata) => Ok(None),
        // Drivers without virDomainGetMetadata still show the metadata in the full XML.
        Err(e) if is(&e, ErrorNumber::NoSupport) => {
            let xml = dom.xml_desc(0).map_err(HostdError::libvirt("xml_desc"))?;
            Ok(domain_xml::parse_domain_xml(&xml))
        }
        Err(e) => Err(HostdError::libvirt("get_metadata")(e)),
    }
}

fn describe(dom: &Domain, name: &str, marker: Marker) -> Result<ManagedDomain, HostdError> {
    let info = dom.info().map_err(HostdError::libvirt("get_info"))?;
    Ok(ManagedDomain {
        name: name.to_string(),
        state: power_state(info.state),
        generation: marker.generation,
        term: marker.term,
        ha: marker.ha,
        vcpus: info.nr_virt_cpu,
        memory_mib: info.max_mem / 1024,
    })
}

fn power_state(state: Enum<DomainState, sys::virDomainState>) -> PowerState {
    match state {
        // Blocked is a running guest waiting on a resource.
        Enum::Known(DomainState::Running | DomainState::Blocked) => PowerState::Running,
        Enum::Known(DomainState::Paused | DomainState::PMSuspended) => PowerState::Paused,
        Enum::Known(DomainState::Shutoff) => PowerState::ShutOff,
        Enum::Known(DomainState::Crashed) => PowerState::Crashed,
        Enum::Known(DomainState::NoState | DomainState::Shutdown) | Enum::Unknown(_) => {
            PowerState::Other
        }
    }
}

fn is_active(dom: &Domain) -> Result<bool, HostdError> {
    dom.is_active().map_err(HostdError::libvirt("is_active"))
}

/// Destroys `dom` if it is active.
fn power_off(dom: &Domain) -> Result<(), HostdError> {
    if is_active(dom)? {
        if let Err(e) = dom.destroy() {
            // Stopping on its own in the meantime is what we wanted anyway.
            if is_active(dom)? {
                return Err(HostdError::libvirt("destroy")(e));
            }
        }
    }
    Ok(())
}

fn is(err: &VirtError, code: ErrorNumber) -> bool {
    err.code().is(code)
}

/// `virDomainBlockResize` of the running domain's device `target` to `bytes` (the `virt`
/// crate has no wrapper for it). QEMU grows the image file and tells the guest.
#[allow(unsafe_code)]
fn block_resize(dom: &Domain, target: &str, bytes: u64) -> Result<(), HostdError> {
    let target = std::ffi::CString::new(target)
        .map_err(|_| HostdError::InvalidArgument(format!("disk target {target:?}")))?;
    // SAFETY: `dom` holds a live virDomainPtr for the whole call and `target` is a
    // NUL-terminated string that outlives it; libvirt only reads both.
    let rc = unsafe {
        sys::virDomainBlockResize(
            dom.as_ptr(),
            target.as_ptr(),
            bytes,
            sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES,
        )
    };
    if rc < 0 {
        return Err(HostdError::libvirt("block_resize")(
            virt::error::Error::last_error(),
        ));
    }
    Ok(())
}
