//! The chain of trust of a flat apt repository, checked on the host by `muster artifacts
//! fetch` before anything is kept: `Release.key` is exactly the pinned key, `Release` is
//! signed by it (`Release.gpg`, else `InRelease`), and `Packages` has the sha256 the signed
//! `Release` lists. apt checks the same chain again when the image installs from the
//! directory; checking here means a fetch from a tampered mirror fails where it happened,
//! naming the file. gpg runs in a throw-away home: the host's keyrings play no part.

use super::ImageError;
use super::files::{io_err, sha256_file};
use std::path::Path;
use std::process::Command;

fn artifact(file: &Path, problem: impl Into<String>) -> ImageError {
    ImageError::Artifact {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

/// The primary keys' fingerprints in `gpg --show-keys --with-colons` output (the `fpr`
/// record after each `pub`; subkeys' are skipped).
pub fn key_fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_pub = false;
    for line in colons.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first() {
            Some(&"pub") => after_pub = true,
            Some(&"fpr") if after_pub => {
                if let Some(f) = fields.get(9).filter(|f| !f.is_empty()) {
                    out.push(f.to_uppercase());
                }
                after_pub = false;
            }
            _ => {}
        }
    }
    out
}

/// The primary key fingerprint of the good signature in `gpg --status-fd 1 --verify`
/// output: the last field of `VALIDSIG` (the signing subkey's is the first). `None` when
/// gpg reported no valid signature (BADSIG, ERRSIG, NO_PUBKEY, …).
pub fn valid_signer(status: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix("[GNUPG:] VALIDSIG ")?;
        rest.split_whitespace().last().map(str::to_uppercase)
    })
}

/// The `SHA256:` section of a Release file: (sha256, size, name) per index file.
pub fn release_sha256(release: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            inside = line.trim_end() == "SHA256:";
            continue;
        }
        if !inside {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(sum), Some(size), Some(name)) = (it.next(), it.next(), it.next())
            && let Ok(size) = size.parse()
        {
            out.push((sum.to_lowercase(), size, name.to_string()));
        }
    }
    out
}

/// gpg in the throw-away home `home`; its stdout, or an error naming `step`.
fn gpg(
    home: &Path,
    args: &[&str],
    files: &[&Path],
    step: &str,
) -> Result<(bool, String), ImageError> {
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--status-fd", "1"])
        .args(args)
        .args(files)
        .output()
        .map_err(|source| ImageError::Spawn {
            step: step.to_string(),
            program: "gpg".into(),
            source,
        })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Checks the repository fetched into `dir` from `repo`: its key is `fingerprint`, its
/// Release is signed by that key, its Packages is the one the Release lists. Every error
/// names the file and what was expected.
pub fn verify(dir: &Path, repo: &str, fingerprint: &str) -> Result<(), ImageError> {
    let home = tempfile::Builder::new()
        .prefix("muster-gnupg")
        .tempdir()
        .map_err(io_err("verifying the repository", dir))?;
    let home = home.path();
    let key = dir.join("Release.key");
    let (_, colons) = gpg(
        home,
        &["--with-colons", "--show-keys"],
        &[&key],
        "reading Release.key",
    )?;
    let got = key_fingerprints(&colons);
    if got.is_empty() {
        return Err(artifact(
            &key,
            format!("not an OpenPGP public key (from {repo}Release.key)"),
        ));
    }
    if got != [fingerprint.to_uppercase()] {
        return Err(artifact(
            &key,
            format!(
                "key fingerprint {} but the pinned key is {fingerprint}: refusing {repo}",
                got.join(" ")
            ),
        ));
    }
    let (imported, _) = gpg(home, &["--import"], &[&key], "importing Release.key")?;
    if !imported {
        return Err(artifact(&key, "gpg could not import it"));
    }
    let (release, detached) = (dir.join("Release"), dir.join("Release.gpg"));
    let is_detached = detached.is_file();
    let (signed, status) = if is_detached {
        let (_, status) = gpg(
            home,
            &["--verify"],
            &[&detached, &release],
            "verifying Release",
        )?;
        (detached, status)
    } else {
        let inline = dir.join("InRelease");
        let (_, status) = gpg(home, &["--verify"], &[&inline], "verifying InRelease")?;
        (inline, status)
    };
    match valid_signer(&status) {
        Some(signer) if signer == fingerprint.to_uppercase() => {}
        Some(signer) => {
            return Err(artifact(
                &signed,
                format!("signed by key {signer}, not the pinned {fingerprint}"),
            ));
        }
        None => {
            return Err(artifact(
                &signed,
                format!(
                    "the signature of Release does not verify with key {fingerprint} (wrong signature)"
                ),
            ));
        }
    }
    // The Release text the signature covers: Release itself (detached), or InRelease's
    // signed part (gpg --decrypt prints it only when the signature is good).
    let text = if is_detached {
        std::fs::read_to_string(&release).map_err(io_err("verifying the repository", &release))?
    } else {
        let (_, text) = gpg(
            home,
            &["--status-fd", "2", "--decrypt"],
            &[&signed],
            "reading InRelease",
        )?;
        text
    };
    let packages = dir.join("Packages");
    let listed = release_sha256(&text);
    let want = listed
        .iter()
        .find(|(_, _, name)| name == "Packages")
        .ok_or_else(|| artifact(&signed, "the signed Release lists no sha256 for Packages"))?;
    let got = sha256_file(&packages)?;
    if got != want.0 {
        return Err(artifact(
            &packages,
            format!(
                "sha256 {got}, expected {} (from the signed Release)",
                want.0
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from gpg 2.2.40 (Debian 12): a key made with `--quick-gen-key … ed25519
    // sign`, shown, a good detached signature, a good clearsigned one, a bad one.
    const SHOW_KEYS: &str = "pub:-:255:22:3A6DDACC5336423E:1796440286:::-:::scSC:::::ed25519:::0:
fpr:::::::::2614620B3769AD46A51865EC3A6DDACC5336423E:
uid:-::::1796440286::F86C600CB30D5A1832D030776DF5DAC9B8059FAD::t <t@x.invalid>::::::::::0:
";
    const GOOD: &str = "[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED 2614620B3769AD46A51865EC3A6DDACC5336423E 0
[GNUPG:] SIG_ID LxqyhSnrheKghUo5xgP4DS8/7C4 2026-12-05 1796440286
[GNUPG:] GOODSIG 3A6DDACC5336423E t <t@x.invalid>
[GNUPG:] VALIDSIG 2614620B3769AD46A51865EC3A6DDACC5336423E 2026-12-05 1796440286 0 4 0 22 8 00 2614620B3769AD46A51865EC3A6DDACC5336423E
[GNUPG:] TRUST_UNDEFINED 0 pgp
";
    const BAD: &str = "[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED 2614620B3769AD46A51865EC3A6DDACC5336423E 0
[GNUPG:] BADSIG 3A6DDACC5336423E t <t@x.invalid>
[GNUPG:] FAILURE gpg-exit 33554433
";
    // apt-ftparchive 2.6.1's `release .` of a directory with one Packages.
    const RELEASE: &str = "Date: Sat, 05 Dec 2026 03:11:28 +0000
Origin: muster-test
MD5Sum:
 632363117d5c737621919597a3cdd700               11 Packages
SHA256:
 c2884d921b791fbd3c1502d39094cd562642944d7149c89fba0f9900eed65bb3               11 Packages
SHA512:
 7cec74e47055d4fd451caf9a692f61ccb71e1b40356b6ac9eef76341bee4dc4fade838f774cefdf8a969dbb78f821ccaad53172e0dece816df94b427c38a1cc1               11 Packages
";

    #[test]
    fn parses_the_primary_fingerprint_the_signer_and_the_sha256_section() {
        assert_eq!(
            key_fingerprints(SHOW_KEYS),
            ["2614620B3769AD46A51865EC3A6DDACC5336423E"]
        );
        assert_eq!(
            valid_signer(GOOD).as_deref(),
            Some("2614620B3769AD46A51865EC3A6DDACC5336423E")
        );
        assert_eq!(valid_signer(BAD), None);
        assert_eq!(
            release_sha256(RELEASE),
            [(
                "c2884d921b791fbd3c1502d39094cd562642944d7149c89fba0f9900eed65bb3".to_string(),
                11,
                "Packages".to_string()
            )]
        );
        assert!(key_fingerprints("not a key\n").is_empty());
    }
}
