//! The OpenAPI 3.1 document, generated from the route annotations plus one path per action
//! built from the action definitions (so each action's parameters are described).

use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::actions::definitions;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "defender-soar",
        description = "SOAR actions for Microsoft Defender for Endpoint"
    ),
    paths(
        super::routes::healthz,
        super::routes::readyz,
        super::routes::metrics,
        super::routes::manifest,
        super::routes::openapi,
        super::routes::list_actions,
        super::routes::run_action,
        super::oauth::start_oauth,
        super::oauth::result,
        super::vault::file,
        super::vault::info,
    ),
    components(schemas(
        crate::envelope::Envelope,
        crate::envelope::Status,
        super::routes::InvokeBody,
        super::routes::ActionSummary
    ))
)]
struct ApiDoc;

/// The document as JSON.
pub fn spec() -> Value {
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    let mut value = serde_json::to_value(&doc).unwrap_or(Value::Null);
    add_action_paths(&mut value);
    value
}

fn json_type(t: &str) -> &'static str {
    match t {
        "integer" => "integer",
        "number" => "number",
        "boolean" => "boolean",
        _ => "string",
    }
}

/// One concrete path per action with its parameter schema.
fn add_action_paths(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for d in definitions() {
        let mut props = Map::new();
        let mut required = Vec::new();
        for p in &d.parameters {
            let s = &p.spec;
            let mut schema = Map::new();
            schema.insert("type".into(), json!(json_type(s.param_type.as_str())));
            if !s.description.is_empty() {
                schema.insert("description".into(), json!(s.description));
            }
            if let Some(v) = &s.default {
                schema.insert("default".into(), v.clone());
            }
            if let Some(v) = &s.value_list {
                schema.insert("enum".into(), json!(v));
            }
            if let Some(v) = s.min {
                schema.insert("minimum".into(), json!(v));
            }
            if let Some(v) = s.max {
                schema.insert("maximum".into(), json!(v));
            }
            if let Some(v) = &s.pattern {
                schema.insert("pattern".into(), json!(v));
            }
            if let Some(v) = s.max_length {
                schema.insert("maxLength".into(), json!(v));
            }
            if let Some(v) = s.min_length {
                schema.insert("minLength".into(), json!(v));
            }
            if s.required && s.default.is_none() {
                required.push(p.name.clone());
            }
            props.insert(p.name.clone(), Value::Object(schema));
        }
        let body = json!({
            "type": "object",
            "properties": {"parameters": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": false,
            }},
            "additionalProperties": false,
        });
        paths.insert(
            format!("/assets/{{asset}}/actions/{}", d.id),
            json!({"post": {
                "summary": d.name,
                "description": d.description,
                "tags": [d.action_type],
                "operationId": d.id,
                "security": [{"api_key": []}],
                "parameters": [{"name": "asset", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": body}}},
                "responses": {"200": {"description": "Envelope", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}},
            }}),
        );
    }
}
