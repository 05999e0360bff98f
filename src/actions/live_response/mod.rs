//! Live response actions (`get_file`, `run_script`, `put_file`) and the event-id resumption
//! workflow they share.
//!
//! Each action runs one live response command on a device, waits for it, and fetches its
//! result. They take the event id of an earlier run (`event_id`) and/or the parameters of a new
//! one, and [`flow::run`] handles the four combinations:
//! 1. `event_id` alone: the event is read; one that is not a live response with the action's
//!    command is refused (400). Succeeded: its result is fetched. Pending or InProgress: the
//!    wait goes on up to `timeout`. Failed, TimeOut or Cancelled: failed with the command's
//!    errors. An unknown event: failed, naming it.
//! 2. parameters alone: a new live response (one POST, never repeated), followed up to
//!    `timeout`, its result fetched; still running then: a success carrying the event id and
//!    its status, to pass back as `event_id`.
//! 3. both: the event first; when it cannot produce a result (unknown, failed, another
//!    command, its result gone) a new live response is started from the parameters and the
//!    message says so.
//! 4. neither: refused (400), naming what is needed.
//!
//! A device runs one live response at a time: when Defender answers `ActiveRequestAlreadyExists`
//! the pending session is looked up, followed when it runs the same command with the same
//! parameters, and named in the failure otherwise. With an `Idempotency-Key`, the key → event
//! mapping is written to the asset's state file before the wait (see [`idempotency`]).
//!
//! - [`command`]: building commands and reading them back from a MachineAction.
//! - [`download`]: download links, pre-signed downloads, the streaming gunzip, file names.
//! - [`flow`]: the four cases, submission, busy devices, resumption, the common envelope.
//! - [`get_file`], [`run_script`], [`put_file`]: the actions and their results.

pub mod command;
pub mod download;
pub mod flow;
pub mod get_file;
pub mod idempotency;
pub mod put_file;
pub mod result;
pub mod run_script;

use super::{HandlerFn, erase};

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<get_file::GetFile>(),
        erase::<run_script::RunScript>(),
        erase::<put_file::PutFile>(),
        erase::<result::GetLiveResponseResult>(),
    ]
}

/// Which live response action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `get_file`: a `GetFile` command.
    GetFile,
    /// `run_script`: a `RunScript` command.
    RunScript,
    /// `put_file`: a `PutFile` command.
    PutFile,
}

impl Kind {
    /// The action id.
    pub fn action_id(self) -> &'static str {
        match self {
            Kind::GetFile => "get_file",
            Kind::RunScript => "run_script",
            Kind::PutFile => "put_file",
        }
    }

    /// The live response command type.
    pub fn command_type(self) -> &'static str {
        match self {
            Kind::GetFile => "GetFile",
            Kind::RunScript => "RunScript",
            Kind::PutFile => "PutFile",
        }
    }

    /// The summary key carrying the live response's status (Splunk SOAR names).
    pub fn status_key(self) -> &'static str {
        match self {
            Kind::GetFile => "file_status",
            Kind::RunScript => "script_status",
            Kind::PutFile => "put_file_status",
        }
    }

    /// The parameters a new live response needs, for messages.
    pub fn needs(self) -> &'static str {
        match self {
            Kind::GetFile => "device_id + file_path + comment",
            Kind::RunScript => "device_id + script_name + comment",
            Kind::PutFile => "device_id + file_name + comment",
        }
    }

    /// What the action brings back, for messages.
    pub fn result_noun(self) -> &'static str {
        match self {
            Kind::GetFile => "file",
            Kind::RunScript => "script output",
            Kind::PutFile => "result",
        }
    }
}
