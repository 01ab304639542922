package revocation

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

// State is a session's standing.
type State string

const (
	// Active sessions may refresh.
	Active State = "active"
	// Revoked sessions may not: logged out, revoked, or caught reusing a refresh token.
	Revoked State = "revoked"
)

// Reasons a session or subject was revoked.
const (
	ReasonLogout  = "logout"
	ReasonRevoked = "revoked"
	ReasonReuse   = "reuse"
)

// Session is what a shard holds for one session (refresh-token family) once it has been refreshed or
// revoked; a session that has only logged in has no record.
type Session struct {
	// Subject is the sub of the session's tokens.
	Subject string `json:"sub"`
	// Generation is the generation of the newest refresh token issued.
	Generation uint64 `json:"gen"`
	// Rotated is when that generation was issued: the time of the last refresh.
	Rotated time.Time `json:"rotated"`
	// Expiry is the session's absolute end; the record can be dropped after it.
	Expiry time.Time `json:"exp"`
	// State says whether the session may still refresh.
	State State `json:"state"`
	// Reason says why a revoked session was revoked.
	Reason string `json:"reason,omitempty"`
	// RevokedAt is when it was revoked.
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// Subject is a subject-wide revocation: every session of Subject that logged in before RevokedBefore.
type Subject struct {
	Subject       string    `json:"sub"`
	RevokedBefore time.Time `json:"revokedBefore"`
	Reason        string    `json:"reason,omitempty"`
	// Expiry is when the last session this mark can affect has ended; the record can be dropped after it.
	Expiry time.Time `json:"exp"`
}

// Data keys in a shard: "s.<session id>" for sessions, "u.<digest of subject>" for subjects (subjects such as
// system:serviceaccount:ns:name are not valid ConfigMap keys; the record itself holds the subject).
const (
	sessionPrefix = "s."
	subjectPrefix = "u."
)

// SessionKey is the shard data key of session sid.
func SessionKey(sid string) string { return sessionPrefix + sid }

// SubjectKey is the shard data key of a subject-wide revocation.
func SubjectKey(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return subjectPrefix + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// IsSessionKey and IsSubjectKey tell the two kinds of entry apart.
func IsSessionKey(key string) bool { return strings.HasPrefix(key, sessionPrefix) }

// IsSubjectKey reports whether key holds a subject-wide revocation.
func IsSubjectKey(key string) bool { return strings.HasPrefix(key, subjectPrefix) }

// ShardOf is the shard, among n, of a session id or subject.
func ShardOf(id string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// NewSessionID returns a new session id placed in shard: 128 random bits, base64url, then "." and the
// shard index. The shard is part of the id so that a session's records stay in one shard for its whole
// life, whatever the shard count becomes, and so that anyone holding only the id (an operator revoking
// it) finds its shard.
func NewSessionID(shard int) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b) + "." + strconv.Itoa(shard)
}

// ShardOfSession is the shard a session id was placed in, or false for an id NewSessionID did not make.
func ShardOfSession(sid string) (int, bool) {
	i := strings.LastIndexByte(sid, '.')
	if i != 22 {
		return 0, false
	}
	if _, err := base64.RawURLEncoding.DecodeString(sid[:i]); err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(sid[i+1:])
	if err != nil || n < 0 || n >= 256 || strconv.Itoa(n) != sid[i+1:] {
		return 0, false
	}
	return n, true
}

// ShardName is the name of shard i of a policy's revocation ConfigMaps.
func ShardName(policy string, i int) string { return policy + "-revocations-" + strconv.Itoa(i) }

// EncodeSession is the text a shard stores for s: one line of JSON, readable with kubectl.
func EncodeSession(s Session) string {
	s.Rotated, s.Expiry = s.Rotated.UTC().Truncate(time.Second), s.Expiry.UTC().Truncate(time.Second)
	if s.RevokedAt != nil {
		t := s.RevokedAt.UTC().Truncate(time.Second)
		s.RevokedAt = &t
	}
	b, _ := json.Marshal(s) // a struct of strings, numbers and times cannot fail to marshal
	return string(b)
}

// DecodeSession parses a session record.
func DecodeSession(v string) (Session, error) {
	var s Session
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return Session{}, fmt.Errorf("decode session record: %w", err)
	}
	if s.State != Active && s.State != Revoked {
		return Session{}, fmt.Errorf("decode session record: unknown state %q", s.State)
	}
	return s, nil
}

// EncodeSubject is the text a shard stores for a subject-wide revocation.
func EncodeSubject(s Subject) string {
	s.RevokedBefore, s.Expiry = s.RevokedBefore.UTC().Truncate(time.Second), s.Expiry.UTC().Truncate(time.Second)
	b, _ := json.Marshal(s)
	return string(b)
}

// DecodeSubject parses a subject-wide revocation.
func DecodeSubject(v string) (Subject, error) {
	var s Subject
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return Subject{}, fmt.Errorf("decode subject record: %w", err)
	}
	if s.Subject == "" {
		return Subject{}, fmt.Errorf("decode subject record: no subject")
	}
	return s, nil
}

// ShardStats summarises a shard's data.
type ShardStats struct {
	Records         int
	Bytes           int
	RevokedSessions int
}

// Stats counts the records, bytes and revoked sessions of a shard's data. Bytes counts keys and values,
// the part of the object that grows with records.
func Stats(data map[string]string) ShardStats {
	var st ShardStats
	for k, v := range data {
		st.Bytes += len(k) + len(v)
		switch {
		case IsSessionKey(k):
			st.Records++
			if s, err := DecodeSession(v); err == nil && s.State == Revoked {
				st.RevokedSessions++
			}
		case IsSubjectKey(k):
			st.Records++
		}
	}
	return st
}

// Expired reports whether the record stored under key can be dropped at now. A record that cannot be
// decoded is never dropped: a person should look at it.
func Expired(key, value string, now time.Time) bool {
	exp, ok := ExpiryOf(key, value)
	return ok && !now.Before(exp)
}

// ExpiryOf is when the record stored under key can be dropped; ok is false for entries that are not
// records or cannot be decoded.
func ExpiryOf(key, value string) (time.Time, bool) {
	switch {
	case IsSessionKey(key):
		s, err := DecodeSession(value)
		return s.Expiry, err == nil
	case IsSubjectKey(key):
		s, err := DecodeSubject(value)
		return s.Expiry, err == nil
	}
	return time.Time{}, false
}

// ShardKeyOf is the id that places the record under key in a shard: the session id, or for a subject
// record the subject itself (read from the value). ok is false for entries that are not records.
func ShardKeyOf(key, value string) (id string, ok bool) {
	switch {
	case IsSessionKey(key):
		return strings.TrimPrefix(key, sessionPrefix), true
	case IsSubjectKey(key):
		s, err := DecodeSubject(value)
		if err != nil {
			return "", false
		}
		return s.Subject, true
	}
	return "", false
}

// JournalName is the name of shard i's journal: the small object every decision is written to, folded
// into the shard (its base) once it grows past a few kilobytes.
func JournalName(policy string, i int) string { return ShardName(policy, i) + JournalSuffix }

// JournalSuffix ends the name of a shard's journal.
const JournalSuffix = "-journal"

// FoldKey is the data entry, in a shard's base and its journal, that orders folds: the base holds the
// number of folds written into it; the journal holds the number of the last fold that removed entries
// from it, so a reader of the journal knows how new a base it needs to see every record.
const FoldKey = "fold"

// FoldSeq reads the fold number of a base or a journal's data (0 when none).
func FoldSeq(data map[string]string) uint64 {
	n, _ := strconv.ParseUint(data[FoldKey], 10, 64)
	return n
}

// Newer is the merge rule between two values of one record key (a base's and a journal's, or a journal
// snapshot's and a base's during a fold): the one that decides more. For a session, a revoked record
// beats an active one, then the higher generation wins; for a subject, the later mark wins. Values that do
// not decode lose to ones that do; ties keep a.
func Newer(key, a, b string) string {
	switch {
	case a == b || b == "":
		return a
	case a == "":
		return b
	case IsSessionKey(key):
		sa, errA := DecodeSession(a)
		sb, errB := DecodeSession(b)
		switch {
		case errB != nil:
			return a
		case errA != nil:
			return b
		case sa.State != sb.State:
			if sb.State == Revoked {
				return b
			}
			return a
		case sb.Generation > sa.Generation:
			return b
		}
		return a
	case IsSubjectKey(key):
		sa, errA := DecodeSubject(a)
		sb, errB := DecodeSubject(b)
		if errA != nil || (errB == nil && sb.RevokedBefore.After(sa.RevokedBefore)) {
			return b
		}
	}
	return a
}

// MergedStats counts a shard's records across its base and its journal, each record once, as merged.
func MergedStats(base, journal map[string]string) ShardStats {
	merged := make(map[string]string, len(base)+len(journal))
	for k, v := range base {
		merged[k] = v
	}
	for k, v := range journal {
		merged[k] = Newer(k, merged[k], v)
	}
	st := Stats(merged)
	st.Bytes = dataBytes(base) + dataBytes(journal)
	return st
}

func dataBytes(data map[string]string) int {
	n := 0
	for k, v := range data {
		n += len(k) + len(v)
	}
	return n
}
