//! `--token-cmd`: a shell command run before every dial whose stdout is the
//! token. Its output is never printed.

use std::process::Stdio;
use std::sync::Arc;

use redial_core::{AuthToken, TokenFailure};
use tokio::process::Command;

/// Longest excerpt of the command's stderr quoted in a failure message.
const STDERR_EXCERPT: usize = 200;

/// Runs `sh -c CMD` and turns its stdout (trimmed) into a token.
///
/// A non-zero exit, a failure to start, or empty output is a
/// [`TokenFailure::transient`]: the session keeps trying with backoff. The
/// child is killed if the dial is abandoned (connect timeout, close).
pub async fn run_token_cmd(cmd: Arc<str>) -> Result<AuthToken, TokenFailure> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(&*cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| TokenFailure::transient(format!("token command did not start: {e}")))?;
    if !output.status.success() {
        let status = match output.status.code() {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".to_owned(),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        let excerpt: String = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .chars()
            .take(STDERR_EXCERPT)
            .collect();
        let message = if excerpt.is_empty() {
            format!("token command {status}")
        } else {
            format!("token command {status}: {excerpt}")
        };
        return Err(TokenFailure::transient(message));
    }
    let token = String::from_utf8(output.stdout)
        .map_err(|_| TokenFailure::transient("token command printed non-UTF-8 output"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenFailure::transient("token command printed nothing"));
    }
    Ok(AuthToken::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdout_trimmed_is_the_token() {
        let t = run_token_cmd("printf '  abc.def \\n'".into())
            .await
            .unwrap();
        assert_eq!(t.expose(), "abc.def");
    }

    #[tokio::test]
    async fn failures_are_transient_and_quote_stderr_not_stdout() {
        let e = run_token_cmd("echo secret; echo 'no creds' >&2; exit 3".into())
            .await
            .unwrap_err();
        let msg = format!("{e:?}");
        assert!(
            msg.contains("exited with 3") && msg.contains("no creds"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
        assert!(run_token_cmd("true".into()).await.is_err());
    }
}
