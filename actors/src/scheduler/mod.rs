//! Placement: which host a VM should run on. The decision is a pure function over the
//! replicated state; the VM's actor commits what it returns. [`place`] is what the actors
//! use today; [`batch`] is the filter/weigher scheduler of issue 5 (overcommit, labels,
//! anti-affinity, spread/pack, batch placement), pure and property-tested, not wired yet.

pub mod batch;
mod place;

pub use place::{place, NoCapacity};
