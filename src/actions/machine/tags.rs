//! `update_device_tag`: add a tag to a device or remove one.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::actions::engine::{self, required_text};
use crate::actions::{Action, ActionContext};
use crate::defender::{DefenderError, endpoints};
use crate::envelope::{ActionError, Outcome};

/// How long the call may wait out throttling.
const DEADLINE: Duration = Duration::from_secs(15);

/// `update_device_tag`.
pub struct UpdateDeviceTag;

/// Parameters of `update_device_tag`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagParams {
    /// Device id.
    pub device_id: String,
    /// Add or Remove.
    pub operation: String,
    /// The tag.
    pub tag: Option<String>,
}

impl Action for UpdateDeviceTag {
    const ID: &'static str = "update_device_tag";
    type Params = TagParams;

    async fn run(ctx: ActionContext, p: TagParams) -> Result<Outcome, ActionError> {
        let tag = required_text("tag", p.tag.as_deref())?;
        let device = engine::resolve_device(&ctx, "device_id", &p.device_id)
            .await?
            .id;
        let client = ctx.asset.defender.with_deadline(Instant::now() + DEADLINE);
        let body = json!({ "Value": tag, "Action": p.operation });
        let machine = match client
            .post(&endpoints::MACHINE_TAGS.at(&[&device]), &body)
            .await
        {
            Ok(v) => v,
            Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
            Err(e) => {
                return Ok(Outcome::failed(format!(
                    "Defender did not update the tags of device {device}: {e}"
                ))
                .with_summary("operation", p.operation.as_str())
                .with_summary("tag", tag.as_str()));
            }
        };
        let tags: Vec<String> = machine
            .get("machineTags")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let verb = if p.operation == "Add" {
            "added to"
        } else {
            "removed from"
        };
        let label = match machine.get("computerDnsName").and_then(Value::as_str) {
            Some(name) => format!("{name} ({device})"),
            None => device.clone(),
        };
        let mut row = machine.clone();
        if let Value::Object(map) = &mut row {
            map.retain(|k, _| !k.starts_with("@odata."));
        }
        Ok(Outcome::success(format!(
            "Tag '{tag}' {verb} device {label}; it now has {} tag(s)",
            tags.len()
        ))
        .with_summary("device_id", device.as_str())
        .with_summary("operation", p.operation.as_str())
        .with_summary("tag", tag.as_str())
        .with_summary("total_tags", tags.len())
        .with_data(row))
    }
}
