//! `apply` for security groups: a group is put whole (created or its rules replaced),
//! deleted only while no VM is in it, and a VM's groups are set whole, each one existing.
//! The rules reach hosts through the VMs' NICs (`drover-sg` filter parameters).

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{validate_name, ClusterState, SecurityGroup, SgRule, MAX_VM_GROUPS};

impl ClusterState {
    pub(crate) fn put_security_group(&mut self, name: &str, rules: &[SgRule]) -> ApplyResult {
        validate_name(name).map_err(|reason| ApplyError::InvalidName {
            what: "security group".into(),
            reason,
        })?;
        let group = SecurityGroup {
            name: name.to_string(),
            rules: rules.to_vec(),
        };
        group
            .validate()
            .map_err(|reason| ApplyError::InvalidSecurityGroup {
                group: name.to_string(),
                reason,
            })?;
        self.security_groups.insert(name.to_string(), group.clone());
        Ok(Reply::SecurityGroup(group))
    }

    pub(crate) fn delete_security_group(&mut self, name: &str) -> ApplyResult {
        if !self.security_groups.contains_key(name) {
            return Err(ApplyError::UnknownSecurityGroup(name.to_string()));
        }
        let users: Vec<&str> = self
            .vms
            .values()
            .filter(|vm| vm.security_groups.iter().any(|g| g == name))
            .map(|vm| vm.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApplyError::SecurityGroupInUse {
                group: name.to_string(),
                vms: users.join(", "),
            });
        }
        self.security_groups.remove(name);
        Ok(Reply::Nothing)
    }

    pub(crate) fn set_vm_security_groups(&mut self, name: &str, groups: &[String]) -> ApplyResult {
        if groups.len() > MAX_VM_GROUPS {
            return Err(ApplyError::InvalidSecurityGroup {
                group: groups.join(","),
                reason: format!("a VM is in at most {MAX_VM_GROUPS} groups"),
            });
        }
        if let Some(unknown) = groups
            .iter()
            .find(|g| !self.security_groups.contains_key(*g))
        {
            return Err(ApplyError::UnknownSecurityGroup(unknown.clone()));
        }
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        vm.security_groups = groups;
        Ok(Reply::Vm(vm.clone()))
    }

    /// The rules that let traffic into `vm`: those of all its groups, `None` if it is in
    /// none (everything comes in).
    pub fn firewall_of(&self, vm: &crate::model::Vm) -> Option<Vec<SgRule>> {
        if vm.security_groups.is_empty() {
            return None;
        }
        let mut rules: Vec<SgRule> = vm
            .security_groups
            .iter()
            .filter_map(|g| self.security_groups.get(g))
            .flat_map(|g| g.rules.iter().cloned())
            .collect();
        rules.sort();
        rules.dedup();
        Some(rules)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::command::Command;
    use crate::model::{DesiredState, SgProto, Vm, VmSpec};

    use super::*;

    fn run(s: &mut ClusterState, cmd: Command) -> ApplyResult {
        s.apply(&cmd).0
    }

    fn ssh_from(net: [u8; 4], prefix: u8) -> SgRule {
        SgRule {
            proto: SgProto::Tcp,
            ports: Some((22, 22)),
            from: Some((Ipv4Addr::from(net), prefix)),
        }
    }

    fn put(name: &str, rules: Vec<SgRule>) -> Command {
        Command::PutSecurityGroup {
            name: name.into(),
            rules,
        }
    }

    fn set(vm: &str, groups: &[&str]) -> Command {
        Command::SetVmSecurityGroups {
            name: vm.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        let vm = Vm::new(
            "a",
            VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            DesiredState::Stopped,
        );
        s.vms.insert("a".into(), vm);
        s
    }

    #[test]
    fn a_vms_firewall_is_the_union_of_its_groups() {
        let mut s = state();
        assert_eq!(s.firewall_of(&s.vms["a"]), None, "no group: all comes in");
        run(&mut s, put("ssh", vec![ssh_from([10, 0, 0, 0], 8)])).unwrap();
        let ping = SgRule {
            proto: SgProto::Icmp,
            ports: None,
            from: None,
        };
        run(
            &mut s,
            put("ping", vec![ping.clone(), ssh_from([10, 0, 0, 0], 8)]),
        )
        .unwrap();
        run(&mut s, set("a", &["ssh", "ping", "ssh"])).unwrap();
        assert_eq!(s.vms["a"].security_groups, ["ping", "ssh"]);
        let rules = s.firewall_of(&s.vms["a"]).unwrap();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert!(rules.contains(&ping));
        // An empty group lets nothing new in (only replies and DHCP).
        run(&mut s, put("shut", vec![])).unwrap();
        run(&mut s, set("a", &["shut"])).unwrap();
        assert_eq!(s.firewall_of(&s.vms["a"]), Some(vec![]));
    }

    #[test]
    fn bad_groups_are_refused_and_change_nothing() {
        let mut s = state();
        run(&mut s, put("ssh", vec![ssh_from([10, 0, 0, 0], 8)])).unwrap();
        run(&mut s, set("a", &["ssh"])).unwrap();
        let before = s.clone();
        let cases = [
            (put("bad name!", vec![]), "Invalid security group name"),
            (put("ssh", vec![ssh_from([10, 0, 0, 1], 8)]), "host bits"),
            (set("a", &["nope"]), "Security group \"nope\" not found"),
            (set("ghost", &["ssh"]), "VM \"ghost\" not found"),
            (
                Command::DeleteSecurityGroup { name: "ssh".into() },
                "in use by VMs a",
            ),
            (
                Command::DeleteSecurityGroup {
                    name: "nope".into(),
                },
                "not found",
            ),
        ];
        for (cmd, says) in cases {
            let e = run(&mut s, cmd.clone()).unwrap_err();
            assert!(e.to_string().contains(says), "{cmd:?}: {e}");
            assert_eq!(s, before, "{cmd:?} changed the state");
        }
        run(&mut s, set("a", &[])).unwrap();
        run(&mut s, Command::DeleteSecurityGroup { name: "ssh".into() }).unwrap();
        assert!(s.security_groups.is_empty());
    }
}
