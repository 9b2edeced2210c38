//! Writes outside runs (reminders, review decisions, merges) commit under
//! their own Delta txn app id; when another writer wins the race, the
//! operation is redone from fresh state a few times.

use std::future::Future;
use std::time::Duration;

use tracing::warn;

/// An error that may mean "another writer changed this table first".
pub trait Contended {
    /// The table raced for, when this error is such a race.
    fn conflict_table(&self) -> Option<&str>;
}

/// Run `op` again (from fresh state) while it loses races, up to 4 tries,
/// waiting `pause` times the attempt number in between.
pub async fn on_conflict<T, E, F, Fut>(what: &str, pause: Duration, mut op: F) -> Result<T, E>
where
    E: Contended,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    const TRIES: u32 = 4;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < TRIES && e.conflict_table().is_some() => {
                warn!(
                    what,
                    table = e.conflict_table().unwrap_or_default(),
                    attempt,
                    "another writer changed the table first; retrying"
                );
                tokio::time::sleep(pause * attempt).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Race,
        Other,
    }
    impl Contended for E {
        fn conflict_table(&self) -> Option<&str> {
            (*self == E::Race).then_some("t")
        }
    }

    #[tokio::test]
    async fn redoes_races_up_to_four_tries_and_nothing_else() {
        let mut n = 0;
        let r: Result<(), E> = on_conflict("x", Duration::ZERO, || {
            n += 1;
            async { Err(E::Race) }
        })
        .await;
        assert_eq!((r, n), (Err(E::Race), 4));
        let mut n = 0;
        let r: Result<(), E> = on_conflict("x", Duration::ZERO, || {
            n += 1;
            async { Err(E::Other) }
        })
        .await;
        assert_eq!((r, n), (Err(E::Other), 1));
    }
}
