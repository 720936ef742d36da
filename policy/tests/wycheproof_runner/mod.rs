//! Wycheproof's signature vectors through the product's verification path:
//! `PkixKey::from_der` (and `from_pem`, which must give the same key) with a
//! GCP `SignatureAlgorithm`, then `PkixKey::verify(msg, sig)`, as the
//! evaluator does.
//!
//! Every vector set of a family (RSA PKCS#1 v1.5, RSA-PSS, ECDSA) goes
//! through the GCP algorithms the test names, group by group, and each
//! group stands to each algorithm in one of three ways:
//!
//! - the algorithm does not take the key (another curve, another RSA size,
//!   an id-RSASSA-PSS key, which the product refuses for every algorithm as
//!   GCP's keys are rsaEncryption): loading must fail with the matching
//!   `KeyError`;
//! - the vectors are signed exactly as the algorithm signs (same scheme and
//!   hash; PSS with MGF1 over that hash and a salt as long as the digest;
//!   ECDSA in DER): valid vectors must verify, invalid ones must not, and
//!   acceptable ones get the verdict `ACCEPTABLE` gives their flag;
//! - the key loads but the vectors are signed with other parameters (another
//!   hash, salt length, MGF, scheme, or IEEE P1363 r‖s instead of DER): their
//!   valid and acceptable vectors are signatures of another algorithm and
//!   must be rejected. Their invalid vectors are not run: invalid for those
//!   parameters says nothing about GCP's (Wycheproof plants genuine
//!   signatures of other hashes and schemes among them).
//!
//! Sets for which no algorithm takes the key are still run, for the
//! refusal. Only `OtherParameters::Skip` leaves vectors out, and the report
//! prints how many and why.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attestgate_policy::verify::{
    Curve, HashAlgorithm, KeyError, PkixKey, SignatureAlgorithm, VerifyError,
};
use wycheproof::{EllipticCurve, HashFunction, Mgf, TestResult};

/// What the product does with Wycheproof's "acceptable" vectors, by flag.
/// A flag not listed here fails the run until someone decides.
pub const ACCEPTABLE: &[(&str, Verdict, &str)] = &[(
    "MissingNull",
    Verdict::Rejected,
    "PKCS#1 v1.5 DigestInfo without the NULL hash parameters: RFC 8017 §9.2 \
     note 2 lets a verifier accept it, but the product compares the encoded \
     message with the one encoding GCP, KMS, openssl and the rsa crate \
     produce (NULL present), so it rejects it",
)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
}

/// The key of a vector group, as far as the GCP algorithms care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyShape {
    /// `restricted`: an id-RSASSA-PSS SubjectPublicKeyInfo (with or without
    /// parameters), which the product refuses: GCP's keys are rsaEncryption.
    Rsa {
        bits: usize,
        restricted: bool,
    },
    Ec(EllipticCurve),
}

/// How a group's vectors were signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Pkcs1,
    /// `mgf1`: MGF1's hash, `None` for a SHAKE MGF.
    Pss {
        mgf1: Option<HashFunction>,
        salt_len: usize,
    },
    EcdsaDer,
    EcdsaP1363,
    EcdsaBitcoin,
}

struct Group {
    key_der: Vec<u8>,
    key_pem: String,
    key: KeyShape,
    hash: HashFunction,
    scheme: Scheme,
    vectors: Vec<Vector>,
}

struct Vector {
    tc_id: usize,
    comment: String,
    msg: Vec<u8>,
    sig: Vec<u8>,
    result: TestResult,
    flags: Vec<String>,
}

/// One Wycheproof vector set (one JSON file).
pub struct Set {
    name: String,
    groups: Vec<Group>,
}

macro_rules! vectors {
    ($tests:expr) => {
        $tests
            .into_iter()
            .map(|t| Vector {
                tc_id: t.tc_id,
                comment: t.comment,
                msg: t.msg.to_vec(),
                sig: t.sig.to_vec(),
                result: t.result,
                flags: t.flags.iter().map(|f| format!("{f:?}")).collect(),
            })
            .collect()
    };
}

/// Every RSASSA-PKCS1-v1_5 verification set.
pub fn rsa_pkcs1_sets() -> &'static [Set] {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    static SETS: OnceLock<Vec<Set>> = OnceLock::new();
    SETS.get_or_init(|| {
        TestName::all()
            .into_iter()
            .map(|name| Set {
                name: format!("{name:?}"),
                groups: TestSet::load(name)
                    .unwrap()
                    .test_groups
                    .into_iter()
                    .map(|g| Group {
                        key_der: g.der.to_vec(),
                        key_pem: g.pem,
                        key: KeyShape::Rsa {
                            bits: g.key_size,
                            restricted: false,
                        },
                        hash: g.hash,
                        scheme: Scheme::Pkcs1,
                        vectors: vectors!(g.tests),
                    })
                    .collect(),
            })
            .collect()
    })
}

/// Every RSASSA-PSS verification set, including those whose keys are
/// id-RSASSA-PSS SubjectPublicKeyInfos (`*_params`).
pub fn rsa_pss_sets() -> &'static [Set] {
    use wycheproof::rsa_pss_verify::{TestGroupTypeId, TestName, TestSet};
    static SETS: OnceLock<Vec<Set>> = OnceLock::new();
    SETS.get_or_init(|| {
        TestName::all()
            .into_iter()
            .map(|name| Set {
                name: format!("{name:?}"),
                groups: TestSet::load(name)
                    .unwrap()
                    .test_groups
                    .into_iter()
                    .map(|g| Group {
                        key_der: g.der.to_vec(),
                        key_pem: g.pem,
                        key: KeyShape::Rsa {
                            bits: g.key_size,
                            restricted: g.test_type == TestGroupTypeId::RsaPssVerifyWithParam,
                        },
                        hash: g.hash,
                        scheme: Scheme::Pss {
                            mgf1: if g.mgf == Mgf::Mgf1 { g.mgf_hash } else { None },
                            salt_len: g.salt_size,
                        },
                        vectors: vectors!(g.tests),
                    })
                    .collect(),
            })
            .collect()
    })
}

/// Every ECDSA verification set: DER, IEEE P1363 and Bitcoin, every curve.
pub fn ecdsa_sets() -> &'static [Set] {
    use wycheproof::ecdsa::{TestGroupTypeId, TestName, TestSet};
    static SETS: OnceLock<Vec<Set>> = OnceLock::new();
    SETS.get_or_init(|| {
        TestName::all()
            .into_iter()
            .map(|name| Set {
                name: format!("{name:?}"),
                groups: TestSet::load(name)
                    .unwrap()
                    .test_groups
                    .into_iter()
                    .map(|g| Group {
                        key_der: g.der.to_vec(),
                        key_pem: g.pem,
                        key: KeyShape::Ec(g.key.curve),
                        hash: g.hash,
                        scheme: match g.test_type {
                            TestGroupTypeId::Ecdsa => Scheme::EcdsaDer,
                            TestGroupTypeId::EcdsaP1363 => Scheme::EcdsaP1363,
                            TestGroupTypeId::EcdsaBitcoin => Scheme::EcdsaBitcoin,
                        },
                        vectors: vectors!(g.tests),
                    })
                    .collect(),
            })
            .collect()
    })
}

fn gcp_hash(hash: HashFunction) -> Option<HashAlgorithm> {
    match hash {
        HashFunction::Sha2_256 => Some(HashAlgorithm::Sha256),
        HashFunction::Sha2_384 => Some(HashAlgorithm::Sha384),
        HashFunction::Sha2_512 => Some(HashAlgorithm::Sha512),
        _ => None,
    }
}

fn gcp_curve(curve: EllipticCurve) -> Option<Curve> {
    match curve {
        EllipticCurve::Secp256r1 => Some(Curve::P256),
        EllipticCurve::Secp384r1 => Some(Curve::P384),
        EllipticCurve::Secp521r1 => Some(Curve::P521),
        _ => None,
    }
}

/// How a group stands to one GCP algorithm.
enum Relation {
    /// The algorithm does not take the key; loading must fail like this.
    KeyRefused(ExpectedKeyError),
    /// The vectors are signed as the algorithm signs.
    Same,
    /// The key loads, the vectors are signed otherwise (why).
    Differs(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpectedKeyError {
    AlgorithmMismatch,
    RsaKeySize { actual: usize },
}

impl ExpectedKeyError {
    fn matches(self, e: &KeyError) -> bool {
        match (self, e) {
            (ExpectedKeyError::AlgorithmMismatch, KeyError::AlgorithmMismatch { .. }) => true,
            (ExpectedKeyError::RsaKeySize { actual }, KeyError::RsaKeySize { actual: a, .. }) => {
                actual == *a
            }
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedKeyError::AlgorithmMismatch => f.write_str("key type mismatch"),
            ExpectedKeyError::RsaKeySize { actual } => write!(f, "RSA key size {actual}"),
        }
    }
}

fn relation(g: &Group, alg: SignatureAlgorithm) -> Relation {
    match g.key {
        KeyShape::Rsa {
            restricted: true, ..
        } => {
            return Relation::KeyRefused(ExpectedKeyError::AlgorithmMismatch);
        }
        KeyShape::Rsa { bits, .. } if alg.rsa_bits() != Some(bits) => {
            return Relation::KeyRefused(ExpectedKeyError::RsaKeySize { actual: bits });
        }
        KeyShape::Ec(curve) if gcp_curve(curve) != alg.curve() => {
            return Relation::KeyRefused(ExpectedKeyError::AlgorithmMismatch);
        }
        _ => {}
    }
    let mut differences = Vec::new();
    if gcp_hash(g.hash) != Some(alg.hash()) {
        differences.push(format!(
            "hashed with {:?}, not {}",
            g.hash,
            alg.hash().name()
        ));
    }
    match g.scheme {
        Scheme::Pkcs1 if alg.is_pss() => differences.push("PKCS#1 v1.5, not PSS".to_owned()),
        Scheme::Pss { .. } if !alg.is_pss() => {
            differences.push("PSS, not PKCS#1 v1.5".to_owned());
        }
        Scheme::Pss { mgf1, salt_len } => {
            if mgf1.and_then(gcp_hash) != Some(alg.hash()) {
                differences.push(format!("MGF {mgf1:?}, not MGF1 with {}", alg.hash().name()));
            }
            if salt_len != alg.hash().digest_len() {
                differences.push(format!(
                    "salt of {salt_len} bytes, not {}",
                    alg.hash().digest_len()
                ));
            }
        }
        Scheme::EcdsaP1363 => differences.push("IEEE P1363 r‖s, not DER".to_owned()),
        Scheme::EcdsaBitcoin => differences.push("Bitcoin rules, not plain ECDSA".to_owned()),
        Scheme::Pkcs1 | Scheme::EcdsaDer => {}
    }
    if differences.is_empty() {
        Relation::Same
    } else {
        Relation::Differs(differences.join(", "))
    }
}

/// Counts for one GCP algorithm over the vectors signed as it signs.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub sets: usize,
    pub groups: usize,
    pub valid: usize,
    pub invalid: usize,
    /// Acceptable vectors by flag, each given the verdict `ACCEPTABLE` says.
    pub acceptable: BTreeMap<String, usize>,
    /// Rejections by kind: ECDSA DER or range errors are `Malformed`.
    pub malformed: usize,
    pub bad: usize,
}

impl Counts {
    pub fn acceptable_total(&self) -> usize {
        self.acceptable.values().sum()
    }

    fn add(&mut self, other: &Counts) {
        self.sets += other.sets;
        self.groups += other.groups;
        self.valid += other.valid;
        self.invalid += other.invalid;
        for (flag, n) in &other.acceptable {
            *self.acceptable.entry(flag.clone()).or_default() += n;
        }
        self.malformed += other.malformed;
        self.bad += other.bad;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} valid accepted, {} invalid rejected, {} acceptable",
            self.valid,
            self.invalid,
            self.acceptable_total()
        )?;
        if !self.acceptable.is_empty() {
            let flags: Vec<String> = self
                .acceptable
                .iter()
                .map(|(flag, n)| format!("{flag} {n}"))
                .collect();
            write!(f, " ({})", flags.join(", "))?;
        }
        write!(
            f,
            "; rejections {} malformed, {} bad",
            self.malformed, self.bad
        )
    }
}

/// Vectors of a group whose key an algorithm takes but whose parameters
/// differ from the algorithm's.
#[derive(Debug, Default, Clone)]
pub struct Differs {
    /// Valid and acceptable vectors, all rejected.
    pub rejected: usize,
    /// Invalid vectors, not run.
    pub not_judged: usize,
    /// Vectors not run at all (`OtherParameters::Skip`).
    pub skipped: usize,
    pub why: String,
}

/// The outcome of running a family's sets.
#[derive(Default)]
pub struct Report {
    pub sets: usize,
    pub groups: usize,
    /// Sets with at least one group signed as some GCP algorithm signs.
    pub matching_sets: usize,
    /// (set, algorithm) → counts, for groups signed as the algorithm signs.
    pub same: BTreeMap<(String, &'static str), Counts>,
    /// Totals per algorithm over `same`.
    pub per_algorithm: BTreeMap<&'static str, Counts>,
    /// (set, algorithm) → vectors signed with other parameters.
    pub differs: BTreeMap<(String, &'static str), Differs>,
    /// (set, algorithm) → groups whose key the algorithm refused, and how.
    pub refused: BTreeMap<(String, &'static str), (usize, String)>,
    pub refused_keys: usize,
    pub failures: Vec<String>,
    pub other_parameters: Option<OtherParameters>,
    pub elapsed: Duration,
}

fn acceptable_verdict(flags: &[String]) -> Option<(Verdict, &'static str)> {
    let verdicts: Vec<(Verdict, &'static str)> = ACCEPTABLE
        .iter()
        .filter(|(flag, _, _)| flags.iter().any(|f| f == flag))
        .map(|(flag, verdict, _)| (*verdict, *flag))
        .collect();
    match verdicts.as_slice() {
        [] => None,
        [first, rest @ ..] => rest.iter().all(|v| v.0 == first.0).then_some(*first),
    }
}

/// What to do with groups whose key an algorithm takes but whose vectors
/// are signed with other parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherParameters {
    /// Their valid and acceptable vectors must be rejected.
    Reject,
    /// Not run, for this reason (printed).
    Skip(&'static str),
}

/// Runs every group of `sets` under every algorithm in `algorithms`, the
/// sets spread over the machine's cores.
pub fn run(
    sets: &[Set],
    algorithms: &[SignatureAlgorithm],
    other_parameters: OtherParameters,
) -> Report {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let partial: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(sets.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut report = Report::default();
                    while let Some(set) = sets.get(next.fetch_add(1, Ordering::Relaxed)) {
                        run_set(set, algorithms, other_parameters, &mut report);
                    }
                    report
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut report = Report {
        other_parameters: Some(other_parameters),
        ..Report::default()
    };
    for p in partial {
        report.sets += p.sets;
        report.groups += p.groups;
        report.matching_sets += p.matching_sets;
        report.same.extend(p.same);
        report.differs.extend(p.differs);
        report.refused.extend(p.refused);
        report.refused_keys += p.refused_keys;
        report.failures.extend(p.failures);
    }
    report.failures.sort();
    for ((_, alg), counts) in &report.same {
        let total = report.per_algorithm.entry(alg).or_default();
        total.add(counts);
        total.sets += 1;
    }
    report.elapsed = started.elapsed();
    report
}

fn run_set(
    set: &Set,
    algorithms: &[SignatureAlgorithm],
    other_parameters: OtherParameters,
    report: &mut Report,
) {
    report.sets += 1;
    let mut matched = false;
    for (gi, g) in set.groups.iter().enumerate() {
        report.groups += 1;
        for &alg in algorithms {
            let at = format!("{} group {gi} as {alg}", set.name);
            let key = PkixKey::from_der(&g.key_der, alg);
            // The PEM form must load to the same key, or fail alike.
            match (&key, PkixKey::from_pem(&g.key_pem, alg)) {
                (Ok(k), Ok(p)) if k.spki_der() == p.spki_der() => {}
                (Err(k), Err(p)) if *k == p => {}
                (k, p) => report
                    .failures
                    .push(format!("{at}: DER gives {k:?}, PEM gives {p:?}")),
            }
            let entry = (set.name.clone(), alg.name());
            let relation = relation(g, alg);
            if let Relation::KeyRefused(expected) = relation {
                match &key {
                    Err(e) if expected.matches(e) => {}
                    other => report.failures.push(format!(
                        "{at}: key should be refused ({expected}), got {other:?}"
                    )),
                }
                report.refused_keys += 1;
                let refused = report.refused.entry(entry).or_default();
                refused.0 += 1;
                refused.1 = expected.to_string();
                continue;
            }
            let key = match key {
                Ok(key) => key,
                Err(e) => {
                    report.failures.push(format!(
                        "{at}: key refused ({e}) for {} vectors",
                        g.vectors.len()
                    ));
                    continue;
                }
            };
            match relation {
                Relation::KeyRefused(_) => {}
                Relation::Differs(why) => {
                    let differs = report.differs.entry(entry).or_default();
                    differs.why = why.clone();
                    if other_parameters != OtherParameters::Reject {
                        differs.skipped += g.vectors.len();
                        continue;
                    }
                    // A valid (or acceptable) vector is a signature made with
                    // the group's parameters, so not one of `alg`: it must be
                    // rejected. An invalid vector is invalid for the group's
                    // parameters, which says nothing about `alg` (some are
                    // planted as genuine `alg` signatures, e.g. "hashed with
                    // SHA-256 instead"), so it is not run.
                    for v in &g.vectors {
                        if v.result == TestResult::Invalid {
                            differs.not_judged += 1;
                            continue;
                        }
                        differs.rejected += 1;
                        if key.verify(&v.msg, &v.sig).is_ok() {
                            report.failures.push(format!(
                                "{at} tc {} ({:?}, {}): accepted though {why}",
                                v.tc_id, v.result, v.comment
                            ));
                        }
                    }
                }
                Relation::Same => {
                    matched = true;
                    let counts = report.same.entry(entry).or_default();
                    counts.groups += 1;
                    for v in &g.vectors {
                        if let Err(failure) = judge(&key, v, counts) {
                            report.failures.push(format!(
                                "{at} tc {} ({:?}, {:?}, {}): {failure}",
                                v.tc_id, v.result, v.flags, v.comment
                            ));
                        }
                    }
                }
            }
        }
    }
    if matched {
        report.matching_sets += 1;
    }
}

/// Verifies a vector signed as the key's algorithm signs and counts it, or
/// says what is wrong with the verdict.
fn judge(key: &PkixKey, v: &Vector, counts: &mut Counts) -> Result<(), String> {
    let outcome = key.verify(&v.msg, &v.sig);
    match &outcome {
        Ok(()) => {}
        Err(VerifyError::Malformed(_)) => counts.malformed += 1,
        Err(_) => counts.bad += 1,
    }
    let accepted = outcome.is_ok();
    match v.result {
        TestResult::Valid if accepted => counts.valid += 1,
        TestResult::Invalid if !accepted => counts.invalid += 1,
        TestResult::Valid => return Err(format!("valid vector rejected: {outcome:?}")),
        TestResult::Invalid => return Err("invalid vector accepted".to_owned()),
        TestResult::Acceptable => {
            let Some((verdict, flag)) = acceptable_verdict(&v.flags) else {
                return Err(format!(
                    "acceptable vector with no decided flag (add it to ACCEPTABLE); \
                     the product accepted it: {accepted}"
                ));
            };
            if (verdict == Verdict::Accepted) != accepted {
                return Err(format!(
                    "acceptable vector ({flag}) should be {verdict:?}; \
                     the product accepted it: {accepted}"
                ));
            }
            *counts.acceptable.entry(flag.to_owned()).or_default() += 1;
        }
    }
    Ok(())
}

impl Report {
    /// Prints the counts, then fails on any wrong verdict, and on counts
    /// that would let a broken filter pass: every algorithm of `algorithms`
    /// must have met valid and invalid vectors signed as it signs, and there
    /// must have been keys to refuse and (unless skipped) vectors of other
    /// parameters to reject.
    pub fn print_and_check(&self, title: &str, algorithms: &[SignatureAlgorithm]) {
        println!(
            "{title}: {} sets, {} groups, {:.1} s; {} sets with vectors signed as a GCP \
             algorithm signs:",
            self.sets,
            self.groups,
            self.elapsed.as_secs_f64(),
            self.matching_sets
        );
        for ((set, alg), counts) in &self.same {
            println!("    {set} as {alg}: {} group(s), {counts}", counts.groups);
        }
        println!("  per algorithm:");
        for (alg, counts) in &self.per_algorithm {
            println!("    {alg}: {} set(s), {counts}", counts.sets);
        }
        for (flag, verdict, why) in ACCEPTABLE {
            if self.same.values().any(|c| c.acceptable.contains_key(*flag)) {
                println!("  acceptable vectors flagged {flag}: {verdict:?}: {why}");
            }
        }

        let rejected: usize = self.differs.values().map(|d| d.rejected).sum();
        let not_judged: usize = self.differs.values().map(|d| d.not_judged).sum();
        let skipped: usize = self.differs.values().map(|d| d.skipped).sum();
        match self.other_parameters {
            Some(OtherParameters::Skip(why)) => println!(
                "  key loads but signed with other parameters: {} (set, algorithm) pairs, \
                 {skipped} vectors, not run: {why}",
                self.differs.len()
            ),
            _ => println!(
                "  key loads but signed with other parameters: {} (set, algorithm) pairs; \
                 {rejected} valid/acceptable vectors, all rejected; {not_judged} invalid \
                 vectors not run (invalid for those parameters says nothing about GCP's):",
                self.differs.len()
            ),
        }
        for ((set, alg), d) in &self.differs {
            println!(
                "    {set} as {alg}: {} rejected, {} not run ({})",
                d.rejected,
                d.not_judged + d.skipped,
                d.why
            );
        }
        println!(
            "  key refused by the algorithm: {} (group, algorithm) pairs in {} (set, algorithm) \
             pairs:",
            self.refused_keys,
            self.refused.len()
        );
        for ((set, alg), (n, how)) in &self.refused {
            println!("    {set} as {alg}: {n} key(s) refused ({how})");
        }

        if !self.failures.is_empty() {
            for failure in self.failures.iter().take(50) {
                println!("FAIL {failure}");
            }
            panic!(
                "{title}: {} wrong verdicts (the first 50 are printed above)",
                self.failures.len()
            );
        }
        assert!(
            self.sets > 0 && self.groups > 0,
            "{title}: no vectors loaded"
        );
        for alg in algorithms {
            let counts = self.per_algorithm.get(alg.name());
            assert!(
                counts.is_some_and(|c| c.valid > 0 && c.invalid > 0),
                "{title}: {alg} met no valid or no invalid vectors: {counts:?}"
            );
        }
        assert!(self.refused_keys > 0, "{title}: no key to refuse");
        match self.other_parameters {
            Some(OtherParameters::Skip(_)) => assert!(skipped > 0),
            _ => assert!(rejected > 0, "{title}: no vectors of other parameters"),
        }
    }
}
