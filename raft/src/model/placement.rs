//! The cluster's placement policy: how far vCPUs and memory may be overcommitted and how
//! hosts are ranked. Replicated, so every leader places by the same rules
//! (`drover cluster placement`). Ratios are stored in percent so the state stays exactly
//! comparable (`Eq`) and serializes without float noise.

use serde::{Deserialize, Serialize};

/// How hosts that can take a VM are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weigher {
    /// Least loaded first (VMmanager's "even" distribution).
    #[default]
    Spread,
    /// Fill one host before the next ("sequential").
    Pack,
}

impl Weigher {
    pub fn as_str(self) -> &'static str {
        match self {
            Weigher::Spread => "spread",
            Weigher::Pack => "pack",
        }
    }

    pub fn parse(text: &str) -> Result<Weigher, String> {
        match text {
            "spread" => Ok(Weigher::Spread),
            "pack" => Ok(Weigher::Pack),
            other => Err(format!("weigher {other:?} is not spread or pack")),
        }
    }
}

/// Accepted overcommit range, in percent.
pub const CPU_OVERCOMMIT_PCT: std::ops::RangeInclusive<u32> = 10..=3200;
pub const MEMORY_OVERCOMMIT_PCT: std::ops::RangeInclusive<u32> = 10..=400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementPolicy {
    /// vCPUs that may be allocated per 100 physical CPUs (400 = ratio 4.0).
    pub cpu_overcommit_pct: u32,
    /// MiB that may be allocated per 100 MiB present (100 = no overcommit).
    pub memory_overcommit_pct: u32,
    pub weigher: Weigher,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        Self {
            cpu_overcommit_pct: 400,
            memory_overcommit_pct: 100,
            weigher: Weigher::Spread,
        }
    }
}

impl PlacementPolicy {
    /// vCPUs that may be allocated on a host with `vcpus` physical CPUs. Integer
    /// arithmetic, shared by the scheduler and `apply`, so the two never disagree.
    pub fn cpu_limit(&self, vcpus: u32) -> u64 {
        u64::from(vcpus) * u64::from(self.cpu_overcommit_pct) / 100
    }

    /// MiB that may be allocated on a host with `memory_mib` present.
    pub fn memory_limit(&self, memory_mib: u64) -> u64 {
        memory_mib * u64::from(self.memory_overcommit_pct) / 100
    }

    /// The CPU ratio as people write it (4.0).
    pub fn cpu_ratio(&self) -> f64 {
        f64::from(self.cpu_overcommit_pct) / 100.0
    }

    pub fn memory_ratio(&self) -> f64 {
        f64::from(self.memory_overcommit_pct) / 100.0
    }

    pub fn validate(&self) -> Result<(), String> {
        if !CPU_OVERCOMMIT_PCT.contains(&self.cpu_overcommit_pct) {
            return Err(format!(
                "CPU overcommit {:.2} is outside {:.1}..={:.1}",
                f64::from(self.cpu_overcommit_pct) / 100.0,
                f64::from(*CPU_OVERCOMMIT_PCT.start()) / 100.0,
                f64::from(*CPU_OVERCOMMIT_PCT.end()) / 100.0
            ));
        }
        if !MEMORY_OVERCOMMIT_PCT.contains(&self.memory_overcommit_pct) {
            return Err(format!(
                "memory overcommit {:.2} is outside {:.1}..={:.1}",
                f64::from(self.memory_overcommit_pct) / 100.0,
                f64::from(*MEMORY_OVERCOMMIT_PCT.start()) / 100.0,
                f64::from(*MEMORY_OVERCOMMIT_PCT.end()) / 100.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_ratio() {
        assert!(PlacementPolicy::default().validate().is_ok());
        let p = PlacementPolicy {
            cpu_overcommit_pct: 5,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().contains("CPU overcommit 0.05"));
        let p = PlacementPolicy {
            memory_overcommit_pct: 1000,
            ..Default::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .contains("memory overcommit 10.00"));
        assert_eq!(Weigher::parse("pack"), Ok(Weigher::Pack));
        assert!(Weigher::parse("even").is_err());
    }
}
