//! Response actions on devices (isolate, release, quarantine file, scan, restrict, investigation
//! package, cancel, tags, get status) and the wait for their outcome.
//!
//! - [`device`] holds the seven actions that create a MachineAction on a device: the POST
//!   (never repeated), an `ActiveRequestAlreadyExists` answer resolved to the pending action of
//!   the same type, the wait, and the envelope (final status, or the event id to resume from).
//! - [`package`] holds `collect_investigation_package`, which also downloads the package into
//!   the vault once the collection succeeded.
//! - [`status`] holds `get_status` (optionally holding until final) and `cancel_action`.
//! - [`tags`] holds `update_device_tag`.
//! - [`bulk`] holds the bulk containment actions: one device action on up to 500 devices.
//!
//! Waiting itself (shared pollers, adaptive interval, the tolerant MachineAction reader) is in
//! the `waiting` module.

pub mod bulk;
pub mod device;
pub mod package;
pub mod status;
pub mod tags;

pub use super::waiting;

use super::{HandlerFn, erase};

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<device::QuarantineDevice>(),
        erase::<device::UnquarantineDevice>(),
        erase::<device::QuarantineFile>(),
        erase::<device::ScanDevice>(),
        erase::<device::RestrictAppExecution>(),
        erase::<device::RemoveAppRestriction>(),
        erase::<package::CollectInvestigationPackage>(),
        erase::<status::GetStatus>(),
        erase::<status::CancelAction>(),
        erase::<tags::UpdateDeviceTag>(),
        erase::<bulk::QuarantineDevices>(),
        erase::<bulk::UnquarantineDevices>(),
        erase::<bulk::ScanDevices>(),
        erase::<bulk::RestrictAppExecutions>(),
        erase::<bulk::QuarantineFiles>(),
    ]
}
