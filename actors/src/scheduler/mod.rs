//! Placement: which host a VM should run on. The decision is a pure function over the
//! replicated state; the VM's actor commits what it returns.

mod place;

pub use place::{place, NoCapacity};
