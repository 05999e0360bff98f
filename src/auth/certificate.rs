//! Certificate credentials (`auth = "certificate"`): the app proves who it is with a JWT signed
//! by the private key of a certificate registered in its app registration, instead of a secret.
//!
//! [`ClientCertificate::load`] reads and checks both PEM files at start-up: the certificate
//! (RSA), the private key (PKCS#1, PKCS#8 or encrypted PKCS#8) and that the key belongs to the
//! certificate. [`ClientCertificate::assertion`] signs a fresh client assertion for each token
//! request: RS256, `x5t#S256` (and `x5t`) naming the certificate, aud = the token endpoint URL,
//! iss = sub = client id, a unique `jti`, valid for ten minutes.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use pkcs8::der::Decode;
use pkcs8::der::oid::ObjectIdentifier;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

/// `client_assertion_type` of a JWT client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a client assertion is valid (seconds).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;

/// `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A certificate and its RSA private key, checked and ready to sign client assertions.
#[derive(Clone)]
pub struct ClientCertificate {
    key: EncodingKey,
    x5t_s256: String,
    x5t: String,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// Which input a certificate problem concerns (to name the configuration key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateInput {
    /// The certificate file (`certificate_file`).
    Certificate,
    /// The private key file (`private_key_file`).
    PrivateKey,
    /// The key's password (`private_key_password_env`).
    Password,
}

/// Why a certificate credential cannot be used. The text never holds key material.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{problem}")]
pub struct CertificateError {
    /// The input at fault.
    pub input: CertificateInput,
    /// What is wrong.
    pub problem: String,
}

impl CertificateError {
    fn new(input: CertificateInput, problem: impl Into<String>) -> CertificateError {
        CertificateError {
            input,
            problem: problem.into(),
        }
    }
}

/// Claims of a client assertion.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl ClientCertificate {
    /// Reads and checks the PEM files; `password` decrypts an encrypted PKCS#8 key.
    pub fn load(
        certificate_file: &Path,
        private_key_file: &Path,
        password: Option<&SecretString>,
    ) -> Result<ClientCertificate, CertificateError> {
        let read = |path: &Path, input: CertificateInput| {
            std::fs::read(path).map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "does not exist".to_string(),
                    std::io::ErrorKind::PermissionDenied => {
                        "cannot be read: permission denied".to_string()
                    }
                    _ => format!("cannot be read: {e}"),
                };
                CertificateError::new(input, format!("file {} {why}", path.display()))
            })
        };
        let cert = read(certificate_file, CertificateInput::Certificate)?;
        let key = read(private_key_file, CertificateInput::PrivateKey)?;
        Self::from_pem(&cert, &key, password)
    }

    /// Like [`ClientCertificate::load`] with the files' contents.
    pub fn from_pem(
        certificate_pem: &[u8],
        private_key_pem: &[u8],
        password: Option<&SecretString>,
    ) -> Result<ClientCertificate, CertificateError> {
        use CertificateInput::{Certificate as C, PrivateKey as K};
        let blocks = pem::parse_many(certificate_pem)
            .map_err(|_| CertificateError::new(C, "is not a PEM file"))?;
        let cert_der = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.contents().to_vec())
            .ok_or_else(|| {
                CertificateError::new(C, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
            })?;
        let cert = Certificate::from_der(&cert_der).map_err(|_| {
            CertificateError::new(C, "the PEM certificate is not a valid X.509 certificate")
        })?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(CertificateError::new(
                C,
                "the certificate's key is not an RSA key; only RSA certificates are supported",
            ));
        }
        let public_pkcs1 = spki.subject_public_key.raw_bytes().to_vec();

        let key_der = private_key_der(private_key_pem, password)?;
        let key = EncodingKey::from_rsa_der(&key_der);
        let probe = b"defender-soar certificate check";
        let signature = jsonwebtoken::crypto::sign(probe, &key, Algorithm::RS256)
            .map_err(|_| CertificateError::new(K, "is not a usable RSA private key"))?;
        let matches = jsonwebtoken::crypto::verify(
            &signature,
            probe,
            &DecodingKey::from_rsa_der(&public_pkcs1),
            Algorithm::RS256,
        )
        .unwrap_or(false);
        if !matches {
            return Err(CertificateError::new(
                K,
                "the private key does not belong to the certificate in certificate_file",
            ));
        }
        Ok(ClientCertificate {
            key,
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&cert_der)),
            x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(&cert_der)),
        })
    }

    /// Base64url SHA-256 thumbprint of the certificate (the `x5t#S256` header).
    pub fn thumbprint_sha256(&self) -> &str {
        &self.x5t_s256
    }

    /// Base64url SHA-1 thumbprint of the certificate (the `x5t` header).
    pub fn thumbprint_sha1(&self) -> &str {
        &self.x5t
    }

    /// A fresh client assertion for `client_id` at the token endpoint `token_url`, issued at
    /// `now` (unix seconds).
    pub fn assertion(&self, client_id: &str, token_url: &str, now: i64) -> Result<String, String> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_string());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        header.x5t = Some(self.x5t.clone());
        let claims = AssertionClaims {
            aud: token_url,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|_| "signing the client assertion failed".to_string())
    }
}

/// The PKCS#1 DER of the RSA private key in `pem_text` (decrypted with `password` when it is
/// an encrypted PKCS#8 key).
fn private_key_der(
    pem_text: &[u8],
    password: Option<&SecretString>,
) -> Result<Vec<u8>, CertificateError> {
    use CertificateInput::{Password as P, PrivateKey as K};
    let blocks =
        pem::parse_many(pem_text).map_err(|_| CertificateError::new(K, "is not a PEM file"))?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| {
            CertificateError::new(
                K,
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or \
                 ENCRYPTED PRIVATE KEY)",
            )
        })?;
    let not_rsa = || CertificateError::new(K, "the private key is not an RSA key");
    let from_pkcs8 = |der: &[u8]| -> Result<Vec<u8>, CertificateError> {
        let info = PrivateKeyInfo::from_der(der)
            .map_err(|_| CertificateError::new(K, "is not a valid PKCS#8 private key"))?;
        if info.algorithm.oid != RSA_ENCRYPTION {
            return Err(not_rsa());
        }
        Ok(info.private_key.to_vec())
    };
    let unexpected_password = || {
        CertificateError::new(
            P,
            "is set but the private key is not encrypted; remove private_key_password_env",
        )
    };
    match block.tag() {
        "RSA PRIVATE KEY" => {
            if block.headers().get("Proc-Type").is_some() {
                return Err(CertificateError::new(
                    K,
                    "legacy encrypted PKCS#1 keys are not supported; convert the key to \
                     encrypted PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc)",
                ));
            }
            if password.is_some() {
                return Err(unexpected_password());
            }
            Ok(block.contents().to_vec())
        }
        "PRIVATE KEY" => {
            if password.is_some() {
                return Err(unexpected_password());
            }
            from_pkcs8(block.contents())
        }
        "ENCRYPTED PRIVATE KEY" => {
            let Some(password) = password else {
                return Err(CertificateError::new(
                    K,
                    "the private key is encrypted: set private_key_password_env to the name of \
                     the environment variable holding its password",
                ));
            };
            let info = EncryptedPrivateKeyInfo::from_der(block.contents()).map_err(|_| {
                CertificateError::new(K, "is not a valid encrypted PKCS#8 private key")
            })?;
            let document = info
                .decrypt(password.expose_secret().as_bytes())
                .map_err(|_| {
                    CertificateError::new(
                        P,
                        "the private key cannot be decrypted with this password (wrong \
                         password or unsupported encryption)",
                    )
                })?;
            from_pkcs8(document.as_bytes()).map_err(|e| {
                if e.problem.contains("RSA") {
                    e
                } else {
                    CertificateError::new(
                        P,
                        "the private key cannot be decrypted with this password",
                    )
                }
            })
        }
        _ => Err(not_rsa()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/certificate")
                .join(name),
        )
        .unwrap()
    }

    fn decode_part(jwt: &str, i: usize) -> serde_json::Value {
        let part = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn every_key_form_loads_and_signs_a_verifiable_assertion() {
        let cert = fixture("test-only-cert.pem");
        let password = SecretString::from("test-only-password".to_string());
        for (key, pw) in [
            ("test-only-key.pkcs8.pem", None),
            ("test-only-key.pkcs1.pem", None),
            ("test-only-key.encrypted.pem", Some(&password)),
        ] {
            let c = ClientCertificate::from_pem(&cert, &fixture(key), pw).unwrap();
            let jwt = c
                .assertion("cid", "https://login.example/t/oauth2/token", 1000)
                .unwrap();
            let header = decode_part(&jwt, 0);
            assert_eq!(header["alg"], "RS256");
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["x5t#S256"], c.thumbprint_sha256());
            assert_eq!(header["x5t"], c.thumbprint_sha1());
            let claims = decode_part(&jwt, 1);
            assert_eq!(claims["aud"], "https://login.example/t/oauth2/token");
            assert_eq!(claims["iss"], "cid");
            assert_eq!(claims["sub"], "cid");
            assert_eq!(claims["nbf"], 1000);
            assert_eq!(claims["iat"], 1000);
            assert_eq!(claims["exp"], 1600);
            let again = c.assertion("cid", "x", 1000).unwrap();
            assert_ne!(decode_part(&again, 1)["jti"], claims["jti"]);
        }
    }

    #[test]
    fn bad_inputs_are_named() {
        let cert = fixture("test-only-cert.pem");
        let key = fixture("test-only-key.pkcs8.pem");
        let encrypted = fixture("test-only-key.encrypted.pem");
        let wrong = SecretString::from("not-the-password".to_string());
        let err = |c: &[u8], k: &[u8], p: Option<&SecretString>| {
            ClientCertificate::from_pem(c, k, p).unwrap_err()
        };
        let e = err(b"garbage", &key, None);
        assert_eq!(e.input, CertificateInput::Certificate);
        let e = err(&key, &key, None);
        assert_eq!(e.input, CertificateInput::Certificate, "{e}");
        let e = err(&cert, b"garbage", None);
        assert_eq!(e.input, CertificateInput::PrivateKey);
        let e = err(&cert, &encrypted, None);
        assert_eq!(e.input, CertificateInput::PrivateKey);
        assert!(e.problem.contains("private_key_password_env"), "{e}");
        let e = err(&cert, &encrypted, Some(&wrong));
        assert_eq!(e.input, CertificateInput::Password);
        let e = err(&cert, &key, Some(&wrong));
        assert_eq!(e.input, CertificateInput::Password);
        let e = err(&cert, &fixture("test-only-ec-key.pem"), None);
        assert!(e.problem.contains("not an RSA key"), "{e}");
        let e = err(&cert, &fixture("other-test-only-key.pem"), None);
        assert!(e.problem.contains("does not belong"), "{e}");
        assert!(!format!("{e:?}").contains("MII"));
    }

    #[test]
    fn debug_hides_the_key() {
        let c = ClientCertificate::from_pem(
            &fixture("test-only-cert.pem"),
            &fixture("test-only-key.pkcs8.pem"),
            None,
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(dbg.contains("[redacted]") && !dbg.contains("MII"));
    }
}
