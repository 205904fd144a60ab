//! TLS client configuration: verification on by default against `--ca` (or
//! the embedded sink's own certificate), `--insecure` to skip it.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::config::Config;
use crate::BlastError;

/// The client config for this run, `None` when TLS is not used.
/// `trusted_pem` is the embedded sink's generated certificate, if any.
pub fn client_config(
    cfg: &Config,
    trusted_pem: Option<&[u8]>,
) -> Result<Option<Arc<ClientConfig>>, BlastError> {
    if !cfg.uses_tls() {
        return Ok(None);
    }
    let base = if cfg.insecure {
        mailstorm_tls::insecure_client_config()
    } else {
        verifying_config(cfg, trusted_pem)?
    };
    Ok(Some(if cfg.tls_resume {
        // rustls's default: an in-memory cache of 256 sessions, shared by
        // every connection of the run.
        base
    } else {
        let mut c = (*base).clone();
        c.resumption = Resumption::disabled();
        Arc::new(c)
    }))
}

fn verifying_config(
    cfg: &Config,
    trusted_pem: Option<&[u8]>,
) -> Result<Arc<ClientConfig>, BlastError> {
    let pem = match (&cfg.ca, trusted_pem) {
        (Some(path), _) => std::fs::read(path)
            .map_err(|e| BlastError::Config(format!("--ca {}: {e}", path.display())))?,
        (None, Some(pem)) => pem.to_vec(),
        (None, None) => {
            return Err(BlastError::Config(
                "TLS certificate verification needs --ca FILE (no public CA roots are \
                 bundled), or --insecure to skip verification"
                    .into(),
            ))
        }
    };
    mailstorm_tls::client_config_trusting(&pem).map_err(|e| BlastError::Config(format!("TLS: {e}")))
}

/// The name sent as SNI and verified: `--sni`, else the target's host.
pub fn server_name(cfg: &Config, host: &str) -> Result<ServerName<'static>, BlastError> {
    let name = cfg.sni.as_deref().unwrap_or(host).to_string();
    ServerName::try_from(name.clone())
        .map_err(|e| BlastError::Config(format!("TLS server name {name:?}: {e}")))
}
