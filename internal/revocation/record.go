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

// SessionShard is the shard whose base holds session sid's record: the one in its id, or 0 for an id
// NewSessionID did not make.
func SessionShard(sid string) int {
	shard, _ := ShardOfSession(sid)
	return shard
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

// JournalName is the name of a policy's journal: the one small object every decision of the policy is
// written to. Past a few tens of kilobytes its entries are sealed into a new segment.
func JournalName(policy string) string { return policy + "-revocations-journal" }

// SegmentName is the name of a policy's sealed segment seq: a copy of the journal's entries at one moment,
// never written again, until the controller merges it into the shard bases and deletes it.
func SegmentName(policy string, seq uint64) string {
	return policy + segmentInfix + strconv.FormatUint(seq, 10)
}

const segmentInfix = "-revocations-seg-"

// Role says which of a policy's revocation objects a ConfigMap is.
type Role int

// The roles of a policy's revocation objects.
const (
	RoleNone    Role = iota // not one of the policy's revocation objects
	RoleBase                // a shard's base, with its index
	RoleJournal             // the policy's journal
	RoleSegment             // a sealed segment, with its number
)

// RoleOf tells which of policy's revocation objects name is: a base (n is the shard index), the journal,
// or a segment (n is its number).
func RoleOf(policy, name string) (role Role, n uint64) {
	switch rest, ok := strings.CutPrefix(name, policy+"-revocations-"); {
	case !ok:
		return RoleNone, 0
	case rest == "journal":
		return RoleJournal, 0
	case strings.HasPrefix(rest, "seg-"):
		seq, err := strconv.ParseUint(rest[len("seg-"):], 10, 64)
		if err != nil || SegmentName(policy, seq) != name {
			return RoleNone, 0
		}
		return RoleSegment, seq
	default:
		i, err := strconv.Atoi(rest)
		if err != nil || i < 0 || ShardName(policy, i) != name {
			return RoleNone, 0
		}
		return RoleBase, uint64(i)
	}
}

// FoldKey is the data entry that orders seals and merges: a journal holds the number of the last segment
// sealed out of it, so a reader of the journal knows which segments it must have seen; a base holds the
// number of the last segment merged into it, so segments up to that number are no longer needed beside it.
const FoldKey = "fold"

// FoldSeq reads the fold number of a base or a journal's data (0 when none).
func FoldSeq(data map[string]string) uint64 {
	n, _ := strconv.ParseUint(data[FoldKey], 10, 64)
	return n
}

// ShardOfEntry is the shard an entry of a journal or segment belongs to, among shards: a session's is
// SessionShard; a subject-wide mark's is the hash of the subject (any shard would do: readers look in all).
func ShardOfEntry(key, value string, shards int) (int, bool) {
	switch {
	case IsSessionKey(key):
		return SessionShard(strings.TrimPrefix(key, sessionPrefix)), true
	case IsSubjectKey(key) && shards > 0:
		s, err := DecodeSubject(value)
		if err != nil {
			return 0, false
		}
		return ShardOf(s.Subject, shards), true
	}
	return 0, false
}

// Newer is the merge rule between two copies of one record (a base's, a segment's, the journal's): the
// one that decides more. For a session, a revoked record
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

// MergedStats counts a shard's records across its base and the entries of the shard that the journal and
// the sealed segments hold (pending), each record once, as merged; Bytes counts every copy.
func MergedStats(base map[string]string, pending ...map[string]string) ShardStats {
	merged := make(map[string]string, len(base))
	for k, v := range base {
		merged[k] = v
	}
	bytes := dataBytes(base)
	for _, p := range pending {
		for k, v := range p {
			merged[k] = Newer(k, merged[k], v)
		}
		bytes += dataBytes(p)
	}
	st := Stats(merged)
	st.Bytes = bytes
	return st
}

// Summarize is Stats of data and the earliest expiry among its records (zero when none has one), decoding
// each record once.
func Summarize(data map[string]string) (ShardStats, time.Time) {
	var st ShardStats
	var earliest time.Time
	for k, v := range data {
		st.Bytes += len(k) + len(v)
		var exp time.Time
		switch {
		case IsSessionKey(k):
			st.Records++
			if s, err := DecodeSession(v); err == nil {
				exp = s.Expiry
				if s.State == Revoked {
					st.RevokedSessions++
				}
			}
		case IsSubjectKey(k):
			st.Records++
			if s, err := DecodeSubject(v); err == nil {
				exp = s.Expiry
			}
		}
		if !exp.IsZero() && (earliest.IsZero() || exp.Before(earliest)) {
			earliest = exp
		}
	}
	return st, earliest
}

// MergedStatsFrom is MergedStats(base, pending) for one pending map, given Stats(base): it decodes only the
// pending entries (and the base's copies of them), so a caller that remembers a base's Stats pays for what
// changed only.
func MergedStatsFrom(baseStats ShardStats, base, pending map[string]string) ShardStats {
	st := baseStats
	for k, v := range pending {
		st.Bytes += len(k) + len(v)
		if !IsSessionKey(k) && !IsSubjectKey(k) {
			continue
		}
		bv, inBase := base[k]
		revoked := isRevokedSession(k, Newer(k, bv, v))
		switch {
		case !inBase:
			st.Records++
			if revoked {
				st.RevokedSessions++
			}
		case revoked && !isRevokedSession(k, bv):
			st.RevokedSessions++
		case !revoked && isRevokedSession(k, bv):
			st.RevokedSessions--
		}
	}
	return st
}

func isRevokedSession(key, value string) bool {
	if !IsSessionKey(key) {
		return false
	}
	s, err := DecodeSession(value)
	return err == nil && s.State == Revoked
}

func dataBytes(data map[string]string) int {
	n := 0
	for k, v := range data {
		n += len(k) + len(v)
	}
	return n
}
