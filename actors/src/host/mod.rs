//! One host's supervision on the leader: the session with its hostd (heartbeats, lease
//! grants, and what each grant told the host), the pure health state machine the HA design
//! runs on it, the rule for which domains a returning host must destroy, and the plan that
//! keeps its storage pools and images as the cluster declares them.

mod actor;
pub mod fence_agent;
mod grant_marks;
mod grants;
pub mod health;
pub mod images;
pub mod networks;
pub mod pools;
mod report;
pub mod rounds;
pub mod stale;

pub use actor::{HostActor, HostContext, HostReport};
pub use fence_agent::FenceAgent;
pub use grants::GrantBook;
pub use rounds::LeadershipRounds;
