//! Topic names and topic filters, as MQTT defines them.

/// Refuses a topic name a PUBLISH cannot carry.
pub(super) fn check_name(topic: &str) -> Result<(), &'static str> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err("a topic name has no wildcards");
    }
    Ok(())
}

/// Refuses a topic filter a SUBSCRIBE cannot carry: `#` only as the last
/// level, `+` and `#` only as whole levels.
pub(super) fn check_filter(filter: &str) -> Result<(), &'static str> {
    check_common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if wild && level.len() != 1 {
            return Err("a wildcard is a whole topic level");
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err("'#' is the last topic level");
        }
    }
    Ok(())
}

fn check_common(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("an empty topic");
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err("a topic over 65535 bytes");
    }
    if topic.contains('\0') {
        return Err("a topic holding U+0000");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["a/b", "a/+/c", "#", "a/#", "+", "+/+", "/"] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/#/c", "a+", "a/b#", "#/", "x\0"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(check_name("a/b c"), Ok(()));
        for bad in ["", "a/+", "#", "a\0"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
