//! Encryption of the secrets inside state files: AES-256-GCM, a fresh random 96-bit nonce per
//! value, the asset id as associated data, stored as base64(nonce || ciphertext).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use secrecy::SecretString;
use secrecy::zeroize::Zeroize as _;

/// Length of the AES-GCM nonce stored in front of every ciphertext.
const NONCE_LEN: usize = 12;
/// Length of the AES-GCM authentication tag at the end of every ciphertext.
const TAG_LEN: usize = 16;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not base64, or too short to hold a nonce and a tag.
    Malformed,
    /// Authentication failed: wrong key, wrong asset, or a changed byte.
    Auth,
}

/// An AES-256-GCM key ready to seal and open secrets.
pub(crate) struct Cipher {
    aead: Aes256Gcm,
}

impl Cipher {
    /// A cipher for `key`.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Cipher {
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    /// Encrypts `plaintext` bound to `asset_id`; `None` only if the AEAD refuses (it never
    /// does for values of sane size).
    pub(crate) fn seal(&self, asset_id: &str, plaintext: &str) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: asset_id.as_bytes(),
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Some(STANDARD.encode(out))
    }

    /// Decrypts a value made by [`Cipher::seal`] for `asset_id`.
    pub(crate) fn open(&self, asset_id: &str, sealed: &str) -> Result<SecretString, OpenError> {
        let raw = STANDARD
            .decode(sealed.trim())
            .map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let mut plaintext = self
            .aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: asset_id.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Auth)?;
        let text = match std::str::from_utf8(&plaintext) {
            Ok(text) => Ok(SecretString::from(text)),
            Err(_) => Err(OpenError::Malformed),
        };
        plaintext.zeroize();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let cipher = Cipher::new(&[7u8; 32]);
        let sealed = cipher.seal("contoso", "secret-value").unwrap();
        assert_eq!(
            cipher.open("contoso", &sealed).unwrap().expose_secret(),
            "secret-value"
        );
        // Fresh nonce each time.
        assert_ne!(sealed, cipher.seal("contoso", "secret-value").unwrap());
        // Bound to the asset id.
        assert_eq!(
            cipher.open("fabrikam", &sealed).err(),
            Some(OpenError::Auth)
        );
        // Bound to the key.
        let other = Cipher::new(&[8u8; 32]);
        assert_eq!(other.open("contoso", &sealed).err(), Some(OpenError::Auth));
        assert_eq!(
            cipher.open("contoso", "not base64!").err(),
            Some(OpenError::Malformed)
        );
        assert_eq!(
            cipher.open("contoso", "AAAA").err(),
            Some(OpenError::Malformed)
        );
    }
}
