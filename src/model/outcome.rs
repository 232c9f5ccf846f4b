//! What an operation did: created, already there, changed, unchanged, deleted, already
//! gone (STYLE rule 2, after stratisd's `CreateAction::{Created, Identity}` and
//! `DeleteAction::{Deleted, Identity}` in `src/engine/types/actions.rs`).
//!
//! An operation returns an [`Outcome`] around the object it is about. The outcome, not
//! the reply, says whether anything changed (the reply's `changed` field) and which event
//! it stands for ([`Outcome::event`]): a retry that finds the work done is
//! `AlreadyThere`/`Unchanged`/`AlreadyGone` and publishes nothing.

/// What an operation did to the object it is about, and that object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The operation made the object.
    Created(T),
    /// An object matching the request was already there: nothing was done.
    AlreadyThere(T),
    /// The operation changed the object (or, for `reconcile`, the exports).
    Changed(T),
    /// The object already was as asked: nothing was done.
    Unchanged(T),
    /// The operation removed the object; `T` says what was removed.
    Deleted(T),
    /// The object was already gone: nothing was done.
    AlreadyGone(T),
}

/// The event an outcome stands for (docs/protocol.md §8.28), for the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `object.created`.
    Created,
    /// `object.changed`.
    Changed,
    /// `object.deleted`.
    Deleted,
}

impl EventKind {
    /// The event's `kind` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "object.created",
            EventKind::Changed => "object.changed",
            EventKind::Deleted => "object.deleted",
        }
    }
}

impl<T> Outcome<T> {
    /// `Created` when `created`, else `AlreadyThere`.
    pub fn created_if(created: bool, object: T) -> Self {
        if created {
            Outcome::Created(object)
        } else {
            Outcome::AlreadyThere(object)
        }
    }

    /// `Changed` when `changed`, else `Unchanged`.
    pub fn changed_if(changed: bool, object: T) -> Self {
        if changed {
            Outcome::Changed(object)
        } else {
            Outcome::Unchanged(object)
        }
    }

    /// Whether the operation changed anything (the reply's `changed` field).
    pub fn changed(&self) -> bool {
        self.event().is_some()
    }

    /// The event this outcome stands for; `None` when nothing changed.
    pub fn event(&self) -> Option<EventKind> {
        match self {
            Outcome::Created(_) => Some(EventKind::Created),
            Outcome::Changed(_) => Some(EventKind::Changed),
            Outcome::Deleted(_) => Some(EventKind::Deleted),
            Outcome::AlreadyThere(_) | Outcome::Unchanged(_) | Outcome::AlreadyGone(_) => None,
        }
    }

    /// The object, whatever happened to it.
    pub fn object(&self) -> &T {
        match self {
            Outcome::Created(t)
            | Outcome::AlreadyThere(t)
            | Outcome::Changed(t)
            | Outcome::Unchanged(t)
            | Outcome::Deleted(t)
            | Outcome::AlreadyGone(t) => t,
        }
    }

    /// The object, taken out.
    pub fn into_object(self) -> T {
        match self {
            Outcome::Created(t)
            | Outcome::AlreadyThere(t)
            | Outcome::Changed(t)
            | Outcome::Unchanged(t)
            | Outcome::Deleted(t)
            | Outcome::AlreadyGone(t) => t,
        }
    }

    /// The same outcome around `f(object)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Created(t) => Outcome::Created(f(t)),
            Outcome::AlreadyThere(t) => Outcome::AlreadyThere(f(t)),
            Outcome::Changed(t) => Outcome::Changed(f(t)),
            Outcome::Unchanged(t) => Outcome::Unchanged(f(t)),
            Outcome::Deleted(t) => Outcome::Deleted(f(t)),
            Outcome::AlreadyGone(t) => Outcome::AlreadyGone(f(t)),
        }
    }

    /// The outcome around a reference to the object.
    pub fn as_ref(&self) -> Outcome<&T> {
        match self {
            Outcome::Created(t) => Outcome::Created(t),
            Outcome::AlreadyThere(t) => Outcome::AlreadyThere(t),
            Outcome::Changed(t) => Outcome::Changed(t),
            Outcome::Unchanged(t) => Outcome::Unchanged(t),
            Outcome::Deleted(t) => Outcome::Deleted(t),
            Outcome::AlreadyGone(t) => Outcome::AlreadyGone(t),
        }
    }
}

/// An object an outcome can be about: it has an id (an event's `object`) and a kind,
/// which is also the key its reply puts it under (`{"share": …, "changed": …}`).
pub trait Object {
    /// The kind, as the reply's key names it: `share`, `snapshot`, `export`, ...
    const KIND: &'static str;
    /// The object's id (what an event's `object` names).
    fn id(&self) -> &str;
}

impl Object for super::Share {
    const KIND: &'static str = "share";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for super::Snapshot {
    const KIND: &'static str = "snapshot";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for super::SnapshotGroup {
    const KIND: &'static str = "group";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for super::Export {
    const KIND: &'static str = "export";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Object for super::Attachment {
    const KIND: &'static str = "attachment";
    fn id(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_changed_something_has_an_event() {
        assert_eq!(
            Outcome::created_if(true, 1).event(),
            Some(EventKind::Created)
        );
        assert_eq!(Outcome::created_if(false, 1).event(), None);
        assert_eq!(
            Outcome::changed_if(true, 1).event(),
            Some(EventKind::Changed)
        );
        assert!(!Outcome::changed_if(false, 1).changed());
        assert!(Outcome::Deleted(1).changed());
        assert!(!Outcome::AlreadyGone(1).changed());
        assert_eq!(Outcome::Deleted(2).map(|x| x * 2).into_object(), 4);
        assert_eq!(EventKind::Deleted.as_str(), "object.deleted");
    }
}
