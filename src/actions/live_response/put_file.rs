//! `put_file`: a library file copied to a device. Its result is the command's status; there is
//! nothing to download.

use serde::Deserialize;

use super::Kind;
use super::command::{CommandInfo, LiveCommand};
use super::flow::{self, Fields, Request, Session, Tracked};
use crate::actions::{Action, ActionContext};
use crate::envelope::{ActionError, Outcome};

/// `put_file`.
pub struct PutFile;

/// Parameters of `put_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutFileParams {
    /// Device id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Library file name.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Comment recorded with the live response.
    #[serde(default)]
    pub comment: Option<String>,
    /// Seconds to wait.
    pub timeout: u64,
    /// An earlier put_file to resume.
    #[serde(default)]
    pub event_id: Option<String>,
}

impl Action for PutFile {
    const ID: &'static str = "put_file";
    type Params = PutFileParams;

    async fn run(ctx: ActionContext, p: PutFileParams) -> Result<Outcome, ActionError> {
        let mut f = Fields::default();
        let device = f.required("device_id", p.device_id.as_deref());
        let name = f.required("file_name", p.file_name.as_deref());
        let comment = f.required("comment", p.comment.as_deref());
        let session = f.session(|| {
            Some(Session {
                device_id: device?,
                command: LiveCommand::put_file(&name?),
                comment: comment?,
            })
        });
        let req = Request {
            kind: Kind::PutFile,
            event_id: flow::event_id_param(p.event_id.as_deref()),
            session,
            timeout: p.timeout,
        };
        flow::run(&ctx, req).await
    }
}

/// The envelope of a succeeded PutFile.
pub fn done(t: &Tracked, cmd: &CommandInfo) -> Outcome {
    let kind = Kind::PutFile;
    let name = cmd
        .command
        .param("FileName")
        .unwrap_or("the file")
        .to_string();
    t.outcome(
        kind,
        false,
        format!(
            "Library file {name} was copied to the device by {}",
            t.label(kind)
        ),
    )
    .with_summary("file_name", name.as_str())
    .with_data(t.action.data_row())
}
