//! Certificate client assertions (`client_assertion_type` = JWT bearer): the JWT must name a
//! certificate registered for the app (`x5t#S256` or `x5t`), carry a valid RS256 (or PS256)
//! signature by that certificate's key, be addressed to the token endpoint the client called
//! (`aud`), be issued by the app for itself (`iss` = `sub` = client id), be inside its time
//! window on the simulated clock and not have been redeemed before (`jti`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

use super::{AadError, Params};
use crate::scenario::App;
use crate::state::Sim;

/// The only accepted `client_assertion_type`.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew tolerated on `nbf` (Entra allows about five minutes).
const SKEW_SECS: i64 = 300;

/// The claims checked.
#[derive(Deserialize)]
struct AssertionClaims {
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
}

/// A registered certificate: its thumbprints and public key (PKCS#1 DER).
struct Registered {
    x5t_s256: String,
    x5t: String,
    public_key: Vec<u8>,
}

/// The DER certificates in a PEM text, with their thumbprints and RSA public keys.
fn registered(pem_text: &str) -> Vec<Registered> {
    pem::parse_many(pem_text.as_bytes())
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .filter_map(|b| {
            let der = b.contents();
            let cert = x509_cert::Certificate::from_der(der).ok()?;
            let key = cert
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes()
                .to_vec();
            Some(Registered {
                x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
                x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
                public_key: key,
            })
        })
        .collect()
}

/// AADSTS50027: the JWT cannot be used.
fn malformed(why: &str) -> AadError {
    AadError::client(
        50027,
        format!("JWT token is invalid or is malformed. {why}"),
    )
}

/// Checks `assertion` for `app` at `token_url` (the endpoint the client called).
pub fn check(
    sim: &Sim,
    app: &App,
    params: &Params,
    assertion: &str,
    token_url: &str,
) -> Result<(), AadError> {
    match params.get("client_assertion_type") {
        None => return Err(AadError::missing("client_assertion_type")),
        Some(t) if t != ASSERTION_TYPE => {
            return Err(AadError::bad(
                "invalid_request",
                50027,
                format!("Invalid client_assertion_type '{t}'; expected '{ASSERTION_TYPE}'."),
            ));
        }
        Some(_) => {}
    }
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| malformed("The client assertion is not a JWT."))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(malformed(
            "The client assertion must be signed with RS256 or PS256.",
        ));
    }
    let thumbprint = header
        .x5t_s256
        .clone()
        .or_else(|| header.x5t.clone())
        .unwrap_or_default();
    let certificate = app
        .certificates
        .iter()
        .flat_map(|pem| registered(pem))
        .find(|c| {
            header.x5t_s256.as_deref() == Some(c.x5t_s256.as_str())
                || (header.x5t_s256.is_none() && header.x5t.as_deref() == Some(c.x5t.as_str()))
        })
        .ok_or_else(|| {
            AadError::client(
                700027,
                format!(
                    "Client assertion contains an invalid signature. [Reason - The key was not \
                     found., Thumbprint of key used by client: '{thumbprint}', Please visit the \
                     Azure Portal, Graph Explorer or directly use MS Graph to see configured \
                     keys for app Id '{}'.]",
                    app.client_id
                ),
            )
        })?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<AssertionClaims>(
        assertion,
        &DecodingKey::from_rsa_der(&certificate.public_key),
        &validation,
    )
    .map_err(|_| {
        AadError::client(
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The signature does \
                 not verify with the key registered under thumbprint '{thumbprint}'.]"
            ),
        )
    })?
    .claims;
    if claims.aud.as_deref() != Some(token_url) {
        return Err(AadError::client(
            700023,
            format!(
                "Client assertion audience claim does not match Realm issuer. The audience must \
                 be '{token_url}'."
            ),
        ));
    }
    let client = app.client_id.as_str();
    let is_client =
        |v: &Option<String>| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(client));
    if !is_client(&claims.iss) || !is_client(&claims.sub) {
        return Err(AadError::client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. The \
             'iss' and 'sub' claims must both be the client id.",
        ));
    }
    let now = sim.clock.unix();
    let (Some(exp), nbf) = (claims.exp, claims.nbf) else {
        return Err(malformed("The client assertion has no 'exp' claim."));
    };
    if now >= exp || nbf.is_some_and(|nbf| nbf > now + SKEW_SECS) {
        return Err(AadError::client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, \
                 assertion valid from {}, expiry time of assertion {}.",
                super::entra_timestamp(now * 1000),
                super::entra_timestamp(nbf.unwrap_or(0) * 1000),
                super::entra_timestamp(exp * 1000),
            ),
        ));
    }
    let Some(jti) = claims.jti.filter(|j| !j.is_empty()) else {
        return Err(malformed("The client assertion has no 'jti' claim."));
    };
    let mut w = sim.world();
    w.used_assertions.retain(|_, e| *e > now);
    if w.used_assertions.contains_key(&jti) {
        return Err(AadError::client(
            50027,
            format!(
                "JWT token is invalid: the client assertion with jti '{jti}' was already used."
            ),
        ));
    }
    w.used_assertions.insert(jti, exp);
    Ok(())
}
