//! Placement: which host a VM should run on. [`batch`] is the filter/weigher core (health,
//! admin state, labels, anti-affinity, capacity × overcommit, spread or pack, batch
//! placement without overbooking), a pure function over plain views; [`views`] builds those
//! views from the replicated state; [`import`] picks the host an image import goes to. The VM actors, migrations and drains all place through
//! here.

pub mod batch;
mod import;
mod views;

pub use batch::{Policy, Refusal, Weigher};
pub use import::{import_host, ImportRefusal};
pub use views::{host_views, place_vm, request_for};
