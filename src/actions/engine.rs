//! The one machine-action engine, shared by every device action, live response and the
//! investigation package: resolve the device, submit the action (one POST, never blindly
//! repeated), resolve `ActiveRequestAlreadyExists` to the action already pending on the
//! device, follow it with the asset's shared poller until it is final or time is up, and hand
//! back what was seen (an event id to resume from when time ran out).
//!
//! What differs between kinds of machine action is a [`Kind`]: its MachineAction type, the
//! endpoint that submits it, how it reads in messages, whether an action already pending on
//! the device is the same request (then it is followed instead of submitting another), and
//! what to answer when the device is busy with something else.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::waiting::{self, MachineAction, WaitSpec, Waited};
use crate::actions::{ActionContext, truncate};
use crate::defender::{
    DefenderClient, DefenderError, Endpoint, Filter, ListQuery, Machine, endpoints,
};
use crate::envelope::{ActionError, Outcome};

/// Defender's code for a second request of a kind already pending on the device.
pub const ACTIVE_REQUEST_EXISTS: &str = "ActiveRequestAlreadyExists";

/// How long a status request may wait for a first answer (throttling) beyond its `wait`.
pub const ANSWER_GRACE: Duration = Duration::from_secs(15);

/// Pending actions read when looking for the one that blocks a device.
const PENDING_LOOKUP: usize = 50;
/// Devices read when resolving a name or an address (enough to list the candidates).
const DEVICE_MATCHES: usize = 50;

/// One kind of machine action.
pub trait Kind: Send + Sync {
    /// The MachineAction `type` Defender gives these actions (`Isolate`, `LiveResponse`).
    fn defender_type(&self) -> &'static str;
    /// The endpoint that submits it.
    fn endpoint(&self) -> &'static Endpoint;
    /// The request in words, for messages (`Isolate request`, `live response (GetFile …)`).
    fn request(&self) -> String;
    /// Whether `pending`, an action of this type already pending on the device, is this same
    /// request (it is then followed instead of submitting another).
    fn is_same(&self, pending: &MachineAction) -> bool;
    /// Whether a refusal without a pending action of this type is worth a second lookup of
    /// any pending action on the device, to name what blocks it.
    fn names_other_blockers(&self) -> bool {
        true
    }
    /// The failed result when Defender refused because the device is busy: `blocking` is the
    /// pending action found (of this type when it is not the same request, or of any type).
    fn busy(
        &self,
        device: &str,
        refusal: &DefenderError,
        blocking: Option<&MachineAction>,
    ) -> Outcome;
}

/// What a submission produced.
#[derive(Debug)]
pub enum Submitted {
    /// An action to follow: new, or the same request already pending on the device.
    Action {
        /// The action as Defender answered it.
        action: Box<MachineAction>,
        /// It was already pending (`ActiveRequestAlreadyExists`): no new request was made.
        existing: bool,
    },
    /// Defender refused; the outcome says why.
    Refused(Outcome),
}

/// Submits `body` as a `kind` action on `device` (one POST; a 429 is waited out within the
/// deadline, nothing else is repeated) and resolves a busy device.
pub async fn submit(
    ctx: &ActionContext,
    kind: &dyn Kind,
    device: &str,
    body: &Value,
    deadline: Instant,
) -> Result<Submitted, ActionError> {
    let client = ctx.asset.defender.with_deadline(deadline);
    let request = kind.request();
    ctx.progress(&format!("submitting the {request} for device {device}"));
    let call = kind.endpoint().at(&[device]);
    let submitted = match client.post(&call, body).await {
        Ok(answer) => match MachineAction::parse(&answer) {
            Ok(action) => Submitted::Action {
                action: Box::new(action),
                existing: false,
            },
            Err(e) => Submitted::Refused(
                Outcome::failed(format!(
                    "Defender accepted the {request} for device {device} but its answer could \
                     not be read ({e}); check the device's action center before repeating it"
                ))
                .with_summary("existing_action", false),
            ),
        },
        Err(e)
            if e.code()
                .is_some_and(|c| c.eq_ignore_ascii_case(ACTIVE_REQUEST_EXISTS)) =>
        {
            busy(ctx, &client, kind, device, &e).await?
        }
        Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
        Err(e) => Submitted::Refused(
            Outcome::failed(format!(
                "Defender did not accept the {request} for device {device}: {e}"
            ))
            .with_summary("existing_action", false),
        ),
    };
    if let Submitted::Action { action, .. } = &submitted {
        tracing::Span::current().record("event_id", action.id.as_str());
    }
    Ok(submitted)
}

/// `ActiveRequestAlreadyExists`: the pending action of the same type is followed when it is
/// the same request; otherwise the refusal names what blocks the device.
async fn busy(
    ctx: &ActionContext,
    client: &DefenderClient,
    kind: &dyn Kind,
    device: &str,
    refusal: &DefenderError,
) -> Result<Submitted, ActionError> {
    let pending = match pending_on(client, device, Some(kind.defender_type())).await {
        Ok(p) => p,
        Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
        Err(lookup) => {
            return Ok(Submitted::Refused(
                Outcome::failed(format!(
                    "Defender refused the {} for device {device}: {refusal}; looking up the \
                     pending action that blocks the device failed: {lookup}",
                    kind.request()
                ))
                .with_summary("existing_action", false),
            ));
        }
    };
    if let Some(p) = &pending
        && kind.is_same(p)
    {
        ctx.progress(&format!(
            "a {} action ({}) is already pending on the device; following it",
            p.type_name(),
            p.id
        ));
        return Ok(Submitted::Action {
            action: Box::new(p.clone()),
            existing: true,
        });
    }
    let blocking = match pending {
        Some(p) => Some(p),
        None if kind.names_other_blockers() => match pending_on(client, device, None).await {
            Ok(p) => p,
            Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
            Err(_) => None,
        },
        None => None,
    };
    Ok(Submitted::Refused(
        kind.busy(device, refusal, blocking.as_ref())
            .with_summary("existing_action", false),
    ))
}

/// The newest action on `device` that is not final, of `action_type` when given.
async fn pending_on(
    client: &DefenderClient,
    device: &str,
    action_type: Option<&str>,
) -> Result<Option<MachineAction>, DefenderError> {
    let mut filter = Filter::eq("machineId", device);
    if let Some(t) = action_type {
        filter = filter.and(Filter::eq("type", t));
    }
    if let Some(active) = Filter::any_of("status", &["Pending", "InProgress"]) {
        filter = filter.and(active);
    }
    let items = client
        .list(
            &endpoints::MACHINE_ACTIONS.at(&[]),
            &ListQuery::new().filter(filter),
            PENDING_LOOKUP,
        )
        .await?;
    Ok(newest_active(&items, device, action_type))
}

/// Of a list of MachineActions, the newest one not final, on `device`, of `action_type`.
pub fn newest_active(
    items: &[Value],
    device: &str,
    action_type: Option<&str>,
) -> Option<MachineAction> {
    items
        .iter()
        .filter_map(|v| MachineAction::parse(v).ok())
        .filter(|a| !a.is_final())
        .filter(|a| {
            a.machine_id
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(device))
        })
        .filter(|a| {
            action_type.is_none_or(|t| {
                a.action_type
                    .as_deref()
                    .is_some_and(|at| at.eq_ignore_ascii_case(t))
            })
        })
        .max_by(|a, b| a.creation_time.cmp(&b.creation_time))
}

/// How following an action ended.
#[derive(Debug, Clone)]
pub enum End {
    /// Final status reached.
    Final,
    /// Still running when time was up; `problem` says why status checks failed, if they did.
    Running {
        /// Last status-check failure.
        problem: Option<String>,
    },
    /// Its status cannot be read (for example the app lacks `Machine.Read.All`): the action
    /// was created and runs on, but following it is pointless.
    Unreadable {
        /// Why.
        problem: String,
    },
}

/// An action that was submitted (or found pending) and followed.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The action as last seen.
    pub action: MachineAction,
    /// It was already pending (`ActiveRequestAlreadyExists`): no new request was made.
    pub existing: bool,
    /// How following it ended.
    pub end: End,
}

/// Follows a known action until it is final or `deadline`, with the asset's shared poller.
pub async fn follow(ctx: &ActionContext, action: MachineAction, deadline: Instant) -> Followed {
    if action.is_final() {
        ctx.asset.tracker.remember(&action);
        super::waiting::share_final(ctx, &action);
        return Followed {
            action,
            existing: false,
            end: End::Final,
        };
    }
    let spec = WaitSpec {
        event_id: action.id.clone(),
        known: Some(action.clone()),
        hold_until: deadline,
        answer_by: deadline,
        fresh_since: None,
        eager: false,
    };
    match waiting::wait(ctx, spec).await {
        Ok(Waited::Final(a)) => Followed {
            action: a,
            existing: false,
            end: End::Final,
        },
        Ok(Waited::Running { last, problem }) => Followed {
            action: last,
            existing: false,
            end: End::Running {
                problem: problem.map(|p| p.to_string()),
            },
        },
        Err(e) => Followed {
            action,
            existing: false,
            end: End::Unreadable {
                problem: e.to_string(),
            },
        },
    }
}

/// What [`submit_and_follow`] produced.
#[derive(Debug)]
pub enum Ran {
    /// An action was followed.
    Followed(Box<Followed>),
    /// Defender refused the request; the outcome says why.
    Refused(Outcome),
}

/// Submits, then follows until final or `timeout` seconds from now.
pub async fn submit_and_follow(
    ctx: &ActionContext,
    kind: &dyn Kind,
    device: &str,
    body: &Value,
    timeout: u64,
) -> Result<Ran, ActionError> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    match submit(ctx, kind, device, body, deadline).await? {
        Submitted::Action { action, existing } => {
            let followed = follow(ctx, *action, deadline).await;
            Ok(Ran::Followed(Box::new(Followed {
                existing,
                ..followed
            })))
        }
        Submitted::Refused(o) => Ok(Ran::Refused(o)),
    }
}

/// A required free-text parameter, trimmed; blank is "missing".
pub fn required_text(name: &str, value: Option<&str>) -> Result<String, ActionError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ActionError::InvalidParameter(format!(
            "parameter '{name}' is required"
        ))),
    }
}

/// At most `max` matches as `name (id)`, for messages.
fn list_ids(matches: &[Machine], max: usize) -> String {
    let mut shown: Vec<String> = matches.iter().take(max).map(Machine::label).collect();
    if matches.len() > max {
        shown.push(format!("and {} more", matches.len() - max));
    }
    shown.join(", ")
}

/// How a device was named in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName {
    /// Its 40-hex Defender id.
    Id,
    /// Its computer DNS name.
    DnsName,
    /// Its last IP address.
    IpAddress,
}

/// A device the request named, resolved to exactly one Defender device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The Defender device id, lower case.
    pub id: String,
    /// How the request named it.
    pub named_by: DeviceName,
    /// What the request said, trimmed.
    pub given: String,
}

/// Checks that `raw` (a `device_id` parameter) names a device the way the host can resolve
/// it: a device id (40 hex characters), a computer DNS name or an IP address. The message
/// names the parameter.
pub fn device_shape(param: &str, raw: &str) -> Result<(), String> {
    let given = raw.trim();
    if given.is_empty() {
        return Err(format!(
            "parameter '{param}' is required: a device id (40 hex characters), a computer DNS \
             name or an IP address"
        ));
    }
    if is_device_id(given) || given.parse::<std::net::IpAddr>().is_ok() || is_dns_name(given) {
        Ok(())
    } else {
        Err(format!(
            "parameter '{param}': '{}' is neither a device id (40 hex characters), a computer \
             DNS name nor an IP address",
            truncate(given, 64)
        ))
    }
}

/// Whether `s` has the shape of a Defender device id (40 hex characters).
pub fn is_device_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `raw` (a device id, a computer DNS name or an IP address; parameter `param`) to
/// exactly one device: an id is taken as it is (no call); a name or an address is looked up
/// (`computerDnsName eq` / `lastIpAddress eq`; a short name without a dot also matches the
/// FQDNs it starts), and none or several matches fail naming them.
pub async fn resolve_device(
    ctx: &ActionContext,
    param: &str,
    raw: &str,
) -> Result<Device, ActionError> {
    let given = raw.trim();
    device_shape(param, given).map_err(ActionError::InvalidParameter)?;
    if is_device_id(given) {
        return Ok(Device {
            id: given.to_ascii_lowercase(),
            named_by: DeviceName::Id,
            given: given.to_string(),
        });
    }
    let (field, named_by) = if given.parse::<std::net::IpAddr>().is_ok() {
        ("lastIpAddress", DeviceName::IpAddress)
    } else {
        ("computerDnsName", DeviceName::DnsName)
    };
    let client = ctx
        .asset
        .defender
        .with_deadline(Instant::now() + ANSWER_GRACE);
    ctx.progress(&format!("looking up the device named {given}"));
    let lookup = given.to_ascii_lowercase();
    let machines = endpoints::MACHINES.at(&[]);
    let mut items = client
        .list(
            &machines,
            &ListQuery::new().filter(Filter::eq(field, &lookup)),
            DEVICE_MATCHES,
        )
        .await?;
    // Defender names most devices by their FQDN: a short name matches `name.` + any domain.
    if items.is_empty() && named_by == DeviceName::DnsName && !lookup.contains('.') {
        items = client
            .list(
                &machines,
                &ListQuery::new().filter(Filter::starts_with(field, &format!("{lookup}."))),
                DEVICE_MATCHES,
            )
            .await?;
    }
    let matches: Vec<Machine> = items
        .iter()
        .filter_map(|m| Machine::parse(m).ok())
        .collect();
    let what = match named_by {
        DeviceName::IpAddress => "last IP address",
        _ => "computer name",
    };
    match matches.as_slice() {
        [] => Err(ActionError::Failed(format!(
            "parameter '{param}': no device has the {what} '{}'",
            truncate(given, 64)
        ))),
        [one] => Ok(Device {
            id: one.id.clone(),
            named_by,
            given: given.to_string(),
        }),
        many => Err(ActionError::Failed(format!(
            "parameter '{param}': {} devices have the {what} '{}': {}; give the device id instead",
            many.len(),
            truncate(given, 64),
            list_ids(many, 10)
        ))),
    }
}

/// A plausible host name: labels of letters, digits, `-` and `_`, separated by dots.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn blank_comment_is_missing() {
        assert!(required_text("comment", Some("  ")).is_err());
        assert!(required_text("comment", None).is_err());
        assert_eq!(required_text("comment", Some(" x ")).unwrap(), "x");
    }

    #[test]
    fn newest_active_picks_the_pending_one_of_the_type() {
        let dev = "a".repeat(40);
        let items = vec![
            json!({"id": "1", "type": "Isolate", "status": "Succeeded", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:03Z"}),
            json!({"id": "2", "type": "Isolate", "status": "Pending", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:01Z"}),
            json!({"id": "3", "type": "Isolate", "status": "InProgress", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:02Z"}),
            json!({"id": "4", "type": "Unisolate", "status": "Pending", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:04Z"}),
            json!({"id": "5", "type": "Isolate", "status": "Pending", "machineId": "b".repeat(40), "creationDateTimeUtc": "2026-01-01T00:00:05Z"}),
            json!("garbage"),
        ];
        let a = newest_active(&items, &dev, Some("Isolate")).unwrap();
        assert_eq!(a.id, "3");
        let any = newest_active(&items, &dev, None).unwrap();
        assert_eq!(any.id, "4");
    }

    #[test]
    fn device_names() {
        assert!(is_device_id(&"aB".repeat(20)));
        assert!(!is_device_id(&"a".repeat(39)));
        assert!(is_dns_name("pc-01.contoso.local"));
        assert!(is_dns_name("WS_7"));
        assert!(!is_dns_name("x' or 1 eq 1"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn long_candidate_lists_are_cut() {
        let m: Vec<Machine> = (0..12)
            .map(|i| {
                Machine::parse(&json!({"id": format!("id{i}"), "computerDnsName": "pc"})).unwrap()
            })
            .collect();
        let text = list_ids(&m, 10);
        assert!(
            text.contains("pc (id0)") && text.ends_with("and 2 more"),
            "{text}"
        );
    }
}
