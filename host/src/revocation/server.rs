//! The check on each new upstream connection, after the handshake and before any request
//! byte: is the server's certificate revoked? A stapled OCSP response first, then a cached
//! or fresh answer from the responder the certificate names, then (or, with "crl", only) the
//! CRLs its distribution points name. The decision is logged as an audit line and counted.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cache::{CACHE, CachedCrl};
use super::ocsp::{self, OcspAnswer};
use super::{RevocationStatus, fetch};
use crate::config::{RevocationMode, RevocationPolicy};
use crate::pki::{ParsedCrl, Purpose, VerifyProblem, VerifyTrust};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    result: &'static str,
}

/// `edgemtls_upstream_revocation_checks_total{result}`: good, revoked, unknown_soft_fail,
/// failed. Process-wide like the cache; `Metrics` registers it.
pub(crate) static CHECKS: LazyLock<Family<ResultLabel, Counter>> = LazyLock::new(Family::default);

/// `edgemtls_inbound_caller_revocation_checks_total{result}`: the same results, for the
/// certificates callers present to the TLS listener.
pub(crate) static CALLER_CHECKS: LazyLock<Family<ResultLabel, Counter>> = LazyLock::new(Family::default);

/// What the check decided for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Good,
    Revoked,
    UnknownSoftFail,
    Failed,
}

impl Decision {
    /// The metric's `result` label.
    fn label(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::UnknownSoftFail => "unknown_soft_fail",
            Self::Failed => "failed",
        }
    }

    /// What the audit line says.
    fn said(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::UnknownSoftFail => "status unknown (soft-fail)",
            Self::Failed => "revocation check failed",
        }
    }
}

/// A connection refused for what its certificate's issuer said (or could not say).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct RevocationRefusal {
    /// True: the issuer says revoked. False: the status could not be learned (no soft-fail).
    pub revoked: bool,
    /// What happened, in plain words.
    pub detail: String,
}

/// One `[[upstreams]]` entry's revocation checking: its policy, and its CA bundle (where a
/// server certificate's issuer is found when the server does not send it).
#[derive(Debug)]
pub struct UpstreamRevocation {
    policy: RevocationPolicy,
    ca_certificates: Vec<CertificateDer<'static>>,
    /// What the certificates checked are for (a CRL check verifies the chain for it).
    purpose: Purpose,
}

impl UpstreamRevocation {
    /// Checking server certificates with `policy`; `ca_certificates` are the entry's CA bundle.
    pub fn new(policy: RevocationPolicy, ca_certificates: Vec<CertificateDer<'static>>) -> Self {
        Self { policy, ca_certificates, purpose: Purpose::Server }
    }

    /// Checking callers' certificates with `policy` (`[tls] revocation`); `client_cas` are
    /// the listener's `client_ca` certificates (where a caller's issuer is found when the
    /// caller does not send it).
    pub(crate) fn for_callers(policy: RevocationPolicy, client_cas: Vec<CertificateDer<'static>>) -> Self {
        Self { policy, ca_certificates: client_cas, purpose: Purpose::Client }
    }

    /// Checking the store's own certificates (`cert status`): any TLS purpose, the issuer
    /// from the stored chain.
    pub(super) fn for_stored(policy: RevocationPolicy) -> Self {
        Self { policy, ca_certificates: Vec::new(), purpose: Purpose::Any }
    }

    /// How often the pools this applies to are replaced, so that pooled connections are
    /// checked again: the CRL cache TTL.
    pub fn recheck_every(&self) -> std::time::Duration {
        self.policy.crl_cache_ttl
    }

    /// Decides for a connection to `authority` whose server presented `chain` (leaf first).
    pub async fn check(&self, authority: &str, chain: &[CertificateDer<'static>]) -> Result<(), RevocationRefusal> {
        let (decision, detail) = self.decide(chain).await;
        CHECKS.get_or_create(&ResultLabel { result: decision.label() }).inc();
        let said = decision.said();
        tracing::info!(target: "edgemtls::audit", upstream = authority, revocation = said, "upstream certificate revocation: {said}: {detail}");
        match decision {
            Decision::Good | Decision::UnknownSoftFail => Ok(()),
            Decision::Revoked => {
                Err(RevocationRefusal { revoked: true, detail: format!("{authority} presented a revoked certificate: {detail}") })
            }
            Decision::Failed => Err(RevocationRefusal {
                revoked: false,
                detail: format!(
                    "cannot tell whether {authority}'s certificate is revoked ({detail}); the connection is refused \
                     (revocation_soft_fail = true would let it through)"
                ),
            }),
        }
    }

    /// Decides for a caller of the TLS listener that presented `chain` (leaf first, its
    /// chain already verified against `client_ca`), whose subject is `subject`.
    pub(crate) async fn check_caller(&self, subject: &str, chain: &[CertificateDer<'static>]) -> Result<(), RevocationRefusal> {
        let (decision, detail) = self.decide(chain).await;
        CALLER_CHECKS.get_or_create(&ResultLabel { result: decision.label() }).inc();
        let said = decision.said();
        tracing::info!(target: "edgemtls::audit", caller = subject, revocation = said, "caller certificate revocation: {said}: {detail}");
        match decision {
            Decision::Good | Decision::UnknownSoftFail => Ok(()),
            Decision::Revoked => Err(RevocationRefusal { revoked: true, detail }),
            Decision::Failed => Err(RevocationRefusal { revoked: false, detail }),
        }
    }

    /// What the policy makes of what the issuer says about `chain`, and the issuer's words.
    async fn decide(&self, chain: &[CertificateDer<'static>]) -> (Decision, String) {
        let status = self.status(chain).await;
        let detail = status.detail().unwrap_or_else(|| "its certificate names no OCSP responder and no CRL".into());
        let decision = match &status {
            RevocationStatus::Good { .. } => Decision::Good,
            RevocationStatus::Revoked { .. } => Decision::Revoked,
            RevocationStatus::NotPublished | RevocationStatus::Unknown { .. } if self.policy.soft_fail => Decision::UnknownSoftFail,
            RevocationStatus::NotPublished | RevocationStatus::Unknown { .. } => Decision::Failed,
        };
        (decision, detail)
    }

    pub(super) async fn status(&self, chain: &[CertificateDer<'static>]) -> RevocationStatus {
        let Some((leaf, presented)) = chain.split_first() else {
            return RevocationStatus::Unknown { detail: "the server presented no certificate".into() };
        };
        let Some(issuer) = find_issuer(leaf, presented.iter().chain(&self.ca_certificates)) else {
            // A certificate that names neither an OCSP responder nor a CRL has no revocation
            // to check, issuer or not (a cert.pem imported without its CA is the usual case).
            let names_ocsp = matches!(self.policy.mode, RevocationMode::Ocsp | RevocationMode::Both) && ocsp::responder_url(leaf).is_some();
            let names_crl = matches!(self.policy.mode, RevocationMode::Crl | RevocationMode::Both) && !super::crl_urls(leaf).is_empty();
            if !names_ocsp && !names_crl {
                return RevocationStatus::NotPublished;
            }
            let detail = match self.purpose {
                Purpose::Server => "its issuer is neither in the chain the server sent nor in the entry's ca_bundle",
                Purpose::Client => "its issuer is neither in the chain the caller sent nor in [tls] client_ca",
                _ => "its issuer's certificate is not stored with it (import the chain)",
            };
            return RevocationStatus::Unknown { detail: detail.into() };
        };
        let now = UnixTime::now();
        let mut unknown = Vec::new();
        if matches!(self.policy.mode, RevocationMode::Ocsp | RevocationMode::Both) {
            match self.ocsp(leaf, issuer, now).await {
                Ok(status @ (RevocationStatus::Good { .. } | RevocationStatus::Revoked { .. })) => return status,
                Ok(other) => unknown.extend(other.detail()),
                Err(why) => unknown.push(why),
            }
        }
        if matches!(self.policy.mode, RevocationMode::Crl | RevocationMode::Both) {
            match self.crl(leaf, issuer, now).await {
                status @ (RevocationStatus::Good { .. } | RevocationStatus::Revoked { .. }) => return status,
                other => unknown.extend(other.detail()),
            }
        }
        if unknown.is_empty() {
            return RevocationStatus::NotPublished;
        }
        RevocationStatus::Unknown { detail: unknown.join("; ") }
    }

    async fn ocsp(
        &self,
        leaf: &CertificateDer<'static>,
        issuer: &CertificateDer<'static>,
        now: UnixTime,
    ) -> Result<RevocationStatus, String> {
        let id = ocsp::cert_id(leaf, issuer).ok_or("its OCSP certificate ID cannot be computed")?;
        let key = der::Encode::to_der(&id).map_err(|_| "its OCSP certificate ID cannot be encoded")?;
        let status = |answer: OcspAnswer, source: &str| match answer {
            OcspAnswer::Good { .. } => RevocationStatus::Good { source: source.to_string() },
            OcspAnswer::Revoked { when, .. } => {
                RevocationStatus::Revoked { source: source.to_string(), detail: format!("revoked on {when}, per {source}") }
            }
            OcspAnswer::Unknown => RevocationStatus::Unknown { detail: format!("{source} does not know the certificate") },
        };
        if let Some(stapled) = CACHE.staple(leaf)
            && let Ok(answer) = ocsp::read(&stapled, &id, issuer, now)
            && answer != OcspAnswer::Unknown
        {
            return Ok(status(answer, "the OCSP response the server stapled"));
        }
        let Some(url) = ocsp::responder_url(leaf) else {
            return Ok(RevocationStatus::NotPublished);
        };
        let source = format!("the OCSP responder {url}");
        if let Some(answer) = CACHE.ocsp(&key, now.as_secs()) {
            return Ok(status(answer, &source));
        }
        let flight = CACHE.flight(&format!("ocsp:{}", hex(&key)));
        let _asking = flight.lock().await;
        if let Some(answer) = CACHE.ocsp(&key, now.as_secs()) {
            return Ok(status(answer, &source));
        }
        let request = ocsp::request(&id).ok_or("its OCSP request cannot be encoded")?;
        let response = fetch::ocsp(&url, request, self.policy.timeout).await.map_err(|e| format!("{source}: {e}"))?;
        let answer = ocsp::read(&response, &id, issuer, now).map_err(|why| format!("{source}: {why}"))?;
        CACHE.store_ocsp(key, answer.clone());
        Ok(status(answer, &source))
    }

    async fn crl(&self, leaf: &CertificateDer<'static>, issuer: &CertificateDer<'static>, now: UnixTime) -> RevocationStatus {
        let urls = super::crl_urls(leaf);
        if urls.is_empty() {
            return RevocationStatus::NotPublished;
        }
        let mut failures = Vec::new();
        for url in &urls {
            let crls = match self.current_crl(url, now.as_secs()).await {
                Ok(crls) => crls,
                Err(why) => {
                    failures.push(format!("{url}: {why}"));
                    continue;
                }
            };
            return judge_by_crl(leaf, issuer, url, &crls, now, self.purpose);
        }
        RevocationStatus::Unknown { detail: format!("no CRL could be fetched: {}", failures.join("; ")) }
    }

    /// The CRLs at `url`: cached while fresh, fetched again after the TTL or nextUpdate; a
    /// failed refresh keeps using the old ones while they are current.
    async fn current_crl(&self, url: &str, now: u64) -> Result<Arc<Vec<ParsedCrl>>, String> {
        let fresh =
            |cached: &Option<CachedCrl>| cached.as_ref().filter(|c| c.is_fresh(self.policy.crl_cache_ttl, now)).map(|c| c.crls.clone());
        if let Some(crls) = fresh(&CACHE.crl(url)) {
            return Ok(crls);
        }
        let flight = CACHE.flight(url);
        let _fetching = flight.lock().await;
        // Whoever held the lock before may have fetched it meanwhile.
        let cached = CACHE.crl(url);
        if let Some(crls) = fresh(&cached) {
            return Ok(crls);
        }
        let fetched = fetch::crls(url, self.policy.timeout).await.map_err(|e| e.to_string()).and_then(|ders| {
            let next_update = earliest_next_update(&ders);
            let parsed = ders.iter().map(|der| ParsedCrl::parse(url, der)).collect::<Result<Vec<_>, _>>()?;
            Ok((Arc::new(parsed), next_update))
        });
        match fetched {
            Ok((crls, next_update)) => {
                CACHE.store_crl(url, CachedCrl { crls: crls.clone(), fetched: std::time::Instant::now(), next_update });
                Ok(crls)
            }
            Err(error) => match cached {
                Some(cached) if cached.is_current(now) => {
                    tracing::warn!(crl = url, "cannot refresh a CRL ({error}); the copy fetched before is still current and stays in use");
                    Ok(cached.crls)
                }
                _ => Err(error),
            },
        }
    }
}

/// What `crls` (fetched from `url`) say about `leaf`, checked by webpki with its `issuer` as
/// the anchor: a CRL from anyone but the issuer, or out of date, decides nothing.
fn judge_by_crl(
    leaf: &CertificateDer<'_>,
    issuer: &CertificateDer<'static>,
    url: &str,
    crls: &[ParsedCrl],
    now: UnixTime,
    purpose: Purpose,
) -> RevocationStatus {
    let trust = VerifyTrust { cas: vec![issuer.clone()], intermediates: Vec::new(), crls: crls.to_vec() };
    match crate::pki::verify(leaf, &[], &trust, purpose, now) {
        Ok(()) => RevocationStatus::Good { source: url.to_string() },
        Err(problem @ VerifyProblem::Revoked { .. }) => RevocationStatus::Revoked { source: url.to_string(), detail: problem.to_string() },
        Err(VerifyProblem::RevocationUnknown) => RevocationStatus::Unknown { detail: format!("the CRL at {url} is not from its issuer") },
        Err(VerifyProblem::CrlExpired) => {
            RevocationStatus::Unknown { detail: format!("the CRL at {url} is out of date (its nextUpdate has passed)") }
        }
        Err(problem) => RevocationStatus::Unknown { detail: format!("its revocation cannot be checked: {problem}") },
    }
}

/// The certificate among `candidates` whose subject is `leaf`'s issuer.
fn find_issuer<'a>(
    leaf: &CertificateDer<'_>,
    candidates: impl Iterator<Item = &'a CertificateDer<'static>>,
) -> Option<&'a CertificateDer<'static>> {
    let (_, leaf) = X509Certificate::from_der(leaf).ok()?;
    let issuer = leaf.issuer().as_raw();
    candidates
        .into_iter()
        .find(|candidate| X509Certificate::from_der(candidate).is_ok_and(|(_, parsed)| parsed.subject().as_raw() == issuer))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The earliest nextUpdate (Unix seconds) among `crls`.
fn earliest_next_update(crls: &[CertificateRevocationListDer<'static>]) -> Option<u64> {
    use x509_parser::revocation_list::CertificateRevocationList;
    crls.iter()
        .filter_map(|der| CertificateRevocationList::from_der(der).ok())
        .filter_map(|(_, crl)| crl.next_update())
        .map(|time| time.timestamp().max(0) as u64)
        .min()
}
