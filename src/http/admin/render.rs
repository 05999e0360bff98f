//! The console's pages, rendered from escaped values only ([`escape_html`] on everything that
//! did not come from this file).

use secrecy::ExposeSecret;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::session::Session;
use crate::audit::AuditLine;
use crate::auth::now_unix;
use crate::defender::FamilyUse;
use crate::http::html::escape_html as e;
use crate::overview::{AssetView, IngestionView, Permissions, ServerView, TokenTimes, relative};

/// The stylesheet (served at `/admin/style.css`): readable on a laptop and on a phone.
pub const STYLE: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;background:#f4f5f7;color:#1b1b1b;margin:0;font-size:15px}\
header{background:#1f2937;color:#fff;padding:12px 20px;display:flex;flex-wrap:wrap;gap:12px;align-items:center;justify-content:space-between}\
header h1{font-size:18px;margin:0}header form{margin:0}header .muted{color:#d1d5db}\
main{max-width:1100px;margin:0 auto;padding:16px}\
section{background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.15);padding:16px 20px;margin:0 0 16px}\
h2{font-size:18px;margin:0 0 8px;display:flex;flex-wrap:wrap;gap:8px;align-items:center}\
h3{font-size:15px;margin:16px 0 6px;color:#374151}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 8px 4px 0;vertical-align:top;border-bottom:1px solid #eee}\
th{color:#4b5563;font-weight:600;white-space:nowrap}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:8px 24px}\
.badge{display:inline-block;border-radius:10px;padding:1px 10px;font-size:13px;font-weight:600}\
.badge.ok{background:#dcfce7;color:#14532d}.badge.warn{background:#fef3c7;color:#78350f}.badge.err{background:#fee2e2;color:#7f1d1d}\
.ok{color:#107c10}.err{color:#a80000}.muted{color:#5e5e5e;font-size:13px}\
meter{width:100%;max-width:260px;height:14px}\
button,.button{background:#2563eb;color:#fff;border:0;border-radius:4px;padding:6px 14px;font-size:14px;cursor:pointer;text-decoration:none;display:inline-block}\
button.quiet{background:#4b5563}\
input[type=password]{width:100%;max-width:420px;padding:8px;font-size:15px;border:1px solid #9ca3af;border-radius:4px}\
code{background:#f2f2f2;padding:1px 4px;word-break:break-all}\
.code{font-size:28px;letter-spacing:3px;font-weight:700}\
.audit td{font-size:13px}.scroll{overflow-x:auto}\
ul{margin:4px 0;padding-left:20px}\
@media (max-width:600px){main{padding:8px}section{padding:12px}td,th{display:block;border:0;padding:2px 0}tr{display:block;border-bottom:1px solid #eee;padding:4px 0}}";

/// A whole page: header (with the sign-out form when signed in) and `body` (markup).
fn shell(title: &str, session: Option<&Session>, body: &str) -> String {
    let user = match session {
        Some(s) => format!(
            "<form method=\"post\" action=\"/admin/sign-out\"><span class=\"muted\" id=\"signed-in-as\">signed in as {}</span> \
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button class=\"quiet\" id=\"sign-out\" type=\"submit\">Sign out</button></form>",
            e(&s.key),
            e(s.csrf.expose_secret())
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"none\">\n<title>{title} · defender-soar</title>\n\
         <link rel=\"stylesheet\" href=\"/admin/style.css\">\n</head>\n<body>\n\
         <header><h1>defender-soar admin console</h1>{user}</header>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = e(title),
    )
}

/// The sign-in form; `problem` says why the last attempt failed.
pub fn sign_in_page(form_token: &str, problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"err\" id=\"problem\">{}</p>\n", e(p)))
        .unwrap_or_default();
    shell(
        "Sign in",
        None,
        &format!(
            "<section>\n<h2 id=\"title\">Sign in</h2>\n{problem}\
             <p>Enter an API key of this host that has the <code>admin</code> scope. The key is checked once; the browser then keeps only a session cookie.</p>\n\
             <form method=\"post\" action=\"/admin/sign-in\">\n\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
             <p><label for=\"api_key\">API key</label><br><input type=\"password\" id=\"api_key\" name=\"api_key\" autocomplete=\"off\" required></p>\n\
             <p><button type=\"submit\" id=\"sign-in\">Sign in</button></p>\n</form>\n</section>\n",
            e(form_token)
        ),
    )
}

/// A page with one message.
pub fn message_page(session: Option<&Session>, title: &str, class: &str, text: &str) -> String {
    shell(
        title,
        session,
        &format!(
            "<section>\n<h2 class=\"{}\" id=\"title\">{}</h2>\n<p id=\"message\">{}</p>\n<p><a href=\"/admin\">Back to the console</a></p>\n</section>\n",
            e(class),
            e(title),
            e(text)
        ),
    )
}

/// The page with an asset's single-use consent link.
pub fn consent_link_page(session: &Session, asset: &str, url: &str) -> String {
    shell(
        "Connect",
        Some(session),
        &format!(
            "<section>\n<h2 id=\"title\">Connect asset {a}</h2>\n\
             <p>A single-use consent link is ready. Open it in this browser within 10 minutes and sign in as an administrator of the tenant; Entra ID asks to grant the app's permissions and then sends you back to this host.</p>\n\
             <p><a class=\"button\" id=\"consent-link\" href=\"{u}\">Open the consent</a></p>\n\
             <p class=\"muted\">When it is done, the console shows the asset as connected.</p>\n\
             <p><a href=\"/admin\">Back to the console</a></p>\n</section>\n",
            a = e(asset),
            u = e(url)
        ),
    )
}

/// The page with a device code sign-in's code.
pub fn device_code_page(
    session: &Session,
    asset: &str,
    code: &str,
    uri: &str,
    expires_in: u64,
) -> String {
    shell(
        "Connect",
        Some(session),
        &format!(
            "<section>\n<h2 id=\"title\">Connect asset {a}</h2>\n\
             <p>An administrator of the tenant opens <a id=\"verification-uri\" href=\"{u}\">{u}</a> on any device within {m} minutes and enters this code:</p>\n\
             <p class=\"code\" id=\"user-code\">{c}</p>\n\
             <p class=\"muted\">The host stores the tokens as soon as they sign in; the console then shows the asset as connected.</p>\n\
             <p><a href=\"/admin\">Back to the console</a></p>\n</section>\n",
            a = e(asset),
            u = e(uri),
            c = e(code),
            m = expires_in / 60
        ),
    )
}

/// A unix time as `2026-11-29 10:20:30 UTC (3 min ago)`.
fn when(at: i64) -> String {
    let text = OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(|s| s.replace('T', " ").replace('Z', " UTC"))
        .unwrap_or_else(|| at.to_string());
    format!("{text} ({})", relative(at))
}

/// Bytes in KiB, MiB or GiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds as `3 d 4 h`, `5 h 12 min`, `7 min`.
fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn row(name: &str, value_markup: &str) -> String {
    format!("<tr><th>{}</th><td>{value_markup}</td></tr>\n", e(name))
}

/// The whole console.
pub fn console_page(
    session: &Session,
    server: &ServerView,
    assets: &[AssetView],
    sessions: usize,
) -> String {
    let mut body = server_section(server, sessions);
    if assets.is_empty() {
        body.push_str("<section><p>No asset is configured for this key.</p></section>\n");
    }
    for a in assets {
        body.push_str(&asset_section(session, a));
    }
    shell("Console", Some(session), &body)
}

fn server_section(s: &ServerView, sessions: usize) -> String {
    let mut rows = String::new();
    rows.push_str(&row("Version", &e(s.version)));
    rows.push_str(&row("Uptime", &e(&duration(s.uptime_secs))));
    rows.push_str(&row("State backend", &e(&s.state_backend)));
    let vault = match &s.vault_error {
        Some(err) => format!("<span class=\"err\">{}</span>", e(err)),
        None => format!(
            "<meter id=\"vault-meter\" min=\"0\" max=\"{max}\" value=\"{used}\" high=\"{high}\"></meter> {} of {} in {} file(s); files up to {}",
            e(&bytes(s.vault_bytes)),
            e(&bytes(s.vault_max_total_bytes)),
            s.vault_files,
            e(&bytes(s.vault_max_file_bytes)),
            max = s.vault_max_total_bytes.max(1),
            used = s.vault_bytes.min(s.vault_max_total_bytes),
            high = s.vault_max_total_bytes / 10 * 9,
        ),
    };
    rows.push_str(&row("Vault", &vault));
    match &s.hosts {
        None => {}
        Some(Ok(hosts)) => {
            let list = hosts
                .iter()
                .map(|h| {
                    format!(
                        "<li><code>{}</code> {} (version {}, up since {})</li>",
                        e(&h.id),
                        e(&h.public_url),
                        e(&h.version),
                        e(&when(h.started_at))
                    )
                })
                .collect::<String>();
            rows.push_str(&row(
                "Connected hosts",
                &format!("{}<ul id=\"hosts\">{list}</ul>", hosts.len()),
            ));
        }
        Some(Err(err)) => rows.push_str(&row(
            "Connected hosts",
            &format!("<span class=\"err\">{}</span>", e(err)),
        )),
    }
    rows.push_str(&row("Console sessions", &sessions.to_string()));
    format!("<section id=\"server\">\n<h2>This host</h2>\n<table>\n{rows}</table>\n</section>\n")
}

fn token_text(t: Option<&TokenTimes>, delegated: bool) -> (String, String) {
    let Some(t) = t else {
        return ("none stored".into(), "—".into());
    };
    let expiry = if t.expires_at > now_unix() {
        format!("expires {}", when(t.expires_at))
    } else {
        format!("expired {}", when(t.expires_at))
    };
    let refresh = if !delegated {
        "not used (application credentials)".to_string()
    } else if t.has_refresh {
        format!(
            "issued {} (Entra ID ends it after 90 days unused)",
            when(t.obtained_at)
        )
    } else {
        "none stored".to_string()
    };
    (expiry, refresh)
}

fn asset_section(session: &Session, a: &AssetView) -> String {
    let class = if a.connection.ok() {
        "ok"
    } else if a.connection == crate::overview::Connection::StateBroken {
        "err"
    } else {
        "warn"
    };
    let mut out = format!(
        "<section class=\"asset\" id=\"asset-{id}\" data-asset=\"{id}\">\n<h2>Asset {id} <span class=\"badge {class}\" id=\"state-{id}\" data-state=\"{code}\">{label}</span></h2>\n",
        id = e(&a.id),
        code = e(a.connection.code()),
        label = e(a.connection.label()),
    );
    out.push_str(&format!("<p class=\"advice\">{}</p>\n", e(&a.advice)));
    if a.consentable() {
        let verb = if a.connection == crate::overview::Connection::Connected {
            "Reconnect"
        } else {
            "Connect"
        };
        out.push_str(&format!(
            "<form method=\"post\" action=\"/admin/assets/{id}/connect\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"connect-{id}\">{verb}</button></form>\n",
            id = e(&a.id),
            csrf = e(session.csrf.expose_secret()),
        ));
    }
    let delegated = a.auth.is_delegated();
    let (expiry, refresh) = token_text(a.token.as_ref(), delegated);
    let (graph_expiry, _) = token_text(a.graph_token.as_ref(), delegated);
    let mut rows = String::new();
    rows.push_str(&row(
        "Auth",
        &format!("<code>{}</code>", e(a.auth.as_str())),
    ));
    rows.push_str(&row("Environment", &e(a.environment.as_str())));
    rows.push_str(&row("Tenant", &format!("<code>{}</code>", e(&a.tenant))));
    rows.push_str(&row("Defender token", &e(&expiry)));
    rows.push_str(&row("Graph token", &e(&graph_expiry)));
    rows.push_str(&row("Refresh token", &e(&refresh)));
    out.push_str(&format!(
        "<div class=\"grid\">\n<div><h3>Connection</h3><table>\n{rows}</table></div>\n"
    ));
    let scope = if a.budget_shared {
        "<p class=\"muted\">Shared by every host on the Redis and every asset of this app registration; the figures count this host's calls.</p>"
    } else {
        "<p class=\"muted\">Shared by every asset of this app registration.</p>"
    };
    out.push_str(&format!(
        "<div><h3>Request budget</h3>{scope}{}</div>\n</div>\n",
        budget_table(&a.budget)
    ));
    out.push_str("<h3>Permissions</h3>\n<div class=\"grid\">\n");
    for p in &a.permissions {
        out.push_str(&permissions_block(&a.id, p));
    }
    out.push_str("</div>\n");
    out.push_str(&ingestion_block(a.ingestion.as_ref()));
    out.push_str(&audit_block(&a.audit, a.audit_error.as_deref()));
    out.push_str("</section>\n");
    out
}

fn budget_table(usage: &[FamilyUse]) -> String {
    let mut rows = String::new();
    for u in usage {
        let hour_cap = u
            .limit
            .per_hour
            .map_or(u64::from(u.limit.per_minute) * 60, u64::from)
            .max(1);
        let hour_limit = match u.limit.per_hour {
            Some(h) => format!("{h}/h"),
            None => "no hourly limit".into(),
        };
        rows.push_str(&format!(
            "<tr data-family=\"{name}\"><th>{what}</th><td><meter min=\"0\" max=\"{hour_cap}\" value=\"{used}\" high=\"{high}\" title=\"last 60 minutes\"></meter><br>\
             <span class=\"muted\">{last_hour} in 60 min ({hour_limit}) · {last_minute}/{per_minute} this minute</span></td></tr>\n",
            name = e(u.family.name()),
            what = e(u.family.describe()),
            used = u.last_hour.min(hour_cap),
            high = hour_cap / 10 * 8,
            last_hour = u.last_hour,
            last_minute = u.last_minute,
            per_minute = u.limit.per_minute,
        ));
    }
    format!("<table class=\"budget\">\n{rows}</table>\n")
}

fn permissions_block(asset: &str, p: &Permissions) -> String {
    let api = p.audience.name();
    let mut out = format!(
        "<div id=\"permissions-{}-{}\"><h3>{}</h3>\n",
        e(asset),
        e(&api.to_ascii_lowercase().replace(' ', "-")),
        e(api)
    );
    let Some(granted) = &p.granted else {
        out.push_str("<p class=\"muted\">Not known yet: no token of this API has been seen (run test_connectivity).</p>\n</div>\n");
        return out;
    };
    out.push_str(&format!(
        "<p>{} of {} needed permissions granted.</p>\n",
        p.needed.len() - p.missing.len(),
        p.needed.len()
    ));
    if p.missing.is_empty() {
        out.push_str("<p class=\"ok\">Nothing is missing.</p>\n");
    } else {
        out.push_str("<table class=\"missing\">\n");
        for m in &p.missing {
            let blocks = if m.blocks.is_empty() {
                "no action (another granted permission covers them)".to_string()
            } else {
                m.blocks.join(", ")
            };
            out.push_str(&format!(
                "<tr><th class=\"err\">{}</th><td class=\"muted\">blocks {}</td></tr>\n",
                e(&m.permission),
                e(&blocks)
            ));
        }
        out.push_str("</table>\n");
    }
    let extra: Vec<&String> = granted.iter().filter(|g| !p.needed.contains(g)).collect();
    if !extra.is_empty() {
        out.push_str(&format!(
            "<p class=\"muted\">Also granted: {}</p>\n",
            e(&extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        ));
    }
    out.push_str("</div>\n");
    out
}

fn ingestion_block(i: Option<&IngestionView>) -> String {
    let Some(i) = i else {
        return "<h3>Alert ingestion</h3>\n<p class=\"muted\">Not enabled for this asset.</p>\n"
            .to_string();
    };
    let mut rows = String::new();
    let last_poll = match i.last_poll_at {
        Some(at) => format!(
            "{}{}",
            e(&when(at)),
            i.last_outcome
                .as_deref()
                .map(|o| format!(": {}", e(o)))
                .unwrap_or_default()
        ),
        None => "none yet".into(),
    };
    if let Some(lease) = &i.lease {
        rows.push_str(&row("Lease", &e(lease)));
    }
    rows.push_str(&row("Last poll", &last_poll));
    if let Some(err) = &i.last_error {
        rows.push_str(&row(
            "Last error",
            &format!("<span class=\"err\">{}</span>", e(err)),
        ));
    }
    rows.push_str(&row(
        "Checkpoint",
        &i.checkpoint.as_deref().map_or_else(
            || "none yet".to_string(),
            |c| format!("<code>{}</code>", e(c)),
        ),
    ));
    rows.push_str(&row(
        "Backlog",
        &e(&format!(
            "{} (alerts left to read at the last poll)",
            if i.more { "yes" } else { "none" }
        )),
    ));
    rows.push_str(&row(
        "Polls",
        &e(&format!(
            "{} ({} failed), every {} s",
            i.polls, i.errors, i.interval_secs
        )),
    ));
    rows.push_str(&row(
        "Journal",
        &e(&format!(
            "{} events kept, last sequence {}, {} dropped by compaction",
            i.events, i.last_seq, i.dropped
        )),
    ));
    for w in &i.webhooks {
        let health = if w.consecutive_failures == 0 {
            "<span class=\"ok\">healthy</span>".to_string()
        } else {
            format!(
                "<span class=\"err\">failing ({} in a row{})</span>",
                w.consecutive_failures,
                w.last_error
                    .as_deref()
                    .map(|m| format!(": {}", e(m)))
                    .unwrap_or_default()
            )
        };
        let last = w
            .last_success_at
            .map(|at| format!(", last success {}", e(&when(at))))
            .unwrap_or_default();
        rows.push_str(&row(
            &format!("Webhook {}", w.shown),
            &format!(
                "{health} · {} delivered, {} waiting{last}",
                w.delivered, w.backlog
            ),
        ));
    }
    format!("<h3>Alert ingestion</h3>\n<table class=\"ingestion\">\n{rows}</table>\n")
}

fn audit_block(lines: &[AuditLine], error: Option<&str>) -> String {
    let mut out = format!(
        "<h3>Last {} audit lines</h3>\n",
        crate::overview::AUDIT_LINES
    );
    if let Some(err) = error {
        out.push_str(&format!("<p class=\"err\">{}</p>\n", e(err)));
        return out;
    }
    if lines.is_empty() {
        out.push_str("<p class=\"muted\">Nothing recorded for this asset yet.</p>\n");
        return out;
    }
    out.push_str("<div class=\"scroll\"><table class=\"audit\">\n<tr><th>Time</th><th>Key</th><th>Action</th><th>Target</th><th>Status</th><th>Message</th></tr>\n");
    for l in lines {
        let target = l
            .target
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                format!("{k}={}", crate::actions::truncate(&v, 80))
            })
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            e(&l.time),
            e(&l.key),
            e(&l.action),
            e(&target),
            l.outcome.status,
            e(&crate::actions::truncate(&l.outcome.message, 200))
        ));
    }
    out.push_str("</table></div>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(20 * 1024 * 1024 * 1024), "20.0 GiB");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(3 * 86_400 + 7200), "3 d 2 h");
    }

    #[test]
    fn hostile_values_are_escaped() {
        let page = message_page(None, "<t>", "err\"x", "<script>alert(1)</script>");
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("err\"x"));
        let page = sign_in_page("\"><img src=x>", Some("<b>"));
        assert!(!page.contains("<img src=x>"));
        assert!(!page.contains("<b>"));
    }
}
