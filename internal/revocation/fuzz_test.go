package revocation

import (
	"reflect"
	"testing"
	"time"
)

// inRange reports whether t survives JSON encoding: RFC 3339 has four-digit years, and EncodeSession and
// EncodeSubject write UTC. A record whose time leaves that range once converted to UTC (a year-0000 time
// with a positive offset, say) encodes as "" (see docs/reliability.md, known limits); tokenwarden itself
// only writes times taken from its clock and its own tokens.
func inRange(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// FuzzRecords feeds arbitrary shard entries to everything that reads a shard: none may panic, and a value
// that decodes encodes to a normal form that decodes to the same record.
func FuzzRecords(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sid := "s." + NewSessionID(3)
	for _, seed := range []struct{ key, value string }{
		{sid, EncodeSession(Session{Subject: "alice", Generation: 7, Rotated: now, Expiry: now.Add(time.Hour), State: Active})},
		{sid, EncodeSession(Session{Subject: "system:serviceaccount:a:b", Generation: 1, Rotated: now, Expiry: now, State: Revoked, Reason: ReasonReuse, RevokedAt: &now})},
		{SubjectKey("bob"), EncodeSubject(Subject{Subject: "bob", RevokedBefore: now, Reason: "left", Expiry: now.Add(time.Hour)})},
		{sid, `{"sub":"a","gen":18446744073709551615,"rotated":"0001-01-01T00:00:00Z","exp":"9999-12-31T23:59:59Z","state":"active"}`},
		{sid, `{"state":"revoked","revokedAt":null}`},
		{sid, `{"state":"active","rotated":"2026-01-01T00:00:00.123456789+14:00"}`},
		{sid, `{"state":"ACTIVE"}`},
		{sid, `{"gen":-1,"state":"active"}`},
		{sid, `{"gen":1e3,"state":"active"}`},
		{SubjectKey("x"), `{"sub":"","revokedBefore":"2026-01-01T00:00:00Z"}`},
		{SubjectKey("x"), `{"sub":"x","revokedBefore":"not a time"}`},
		{FoldKey, "12"},
		{"s.", ""},
		{"u.", "null"},
		{"other", "{}"},
	} {
		f.Add(seed.key, seed.value)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		data := map[string]string{key: value, FoldKey: value}
		_ = Stats(data)
		pending := map[string]string{key: value + value, SessionKey("p"): value}
		if a, b := MergedStats(data, pending), MergedStatsFrom(Stats(data), data, pending); a != b {
			t.Fatalf("MergedStats %+v, MergedStatsFrom %+v; want them equal", a, b)
		}
		if st, _ := Summarize(data); st != Stats(data) {
			t.Fatalf("Summarize %+v, Stats %+v; want them equal", st, Stats(data))
		}
		_ = FoldSeq(data)
		_, _ = ExpiryOf(key, value)
		_ = Expired(key, value, now)
		_, _ = ShardKeyOf(key, value)
		_, _ = ShardOfSession(key)

		if s, err := DecodeSession(value); err == nil {
			if st := Stats(map[string]string{SessionKey("x"): value}); st.Records != 1 || (st.RevokedSessions == 1) != (s.State == Revoked) {
				t.Fatalf("Stats of one session record %q: %+v", value, st)
			}
			if inRange(s.Rotated) && inRange(s.Expiry) && (s.RevokedAt == nil || inRange(*s.RevokedAt)) {
				enc := EncodeSession(s)
				back, err := DecodeSession(enc)
				if err != nil {
					t.Fatalf("EncodeSession(DecodeSession(%q)) = %q does not decode: %v", value, enc, err)
				}
				if again := EncodeSession(back); again != enc {
					t.Fatalf("encoding is not a normal form: %q, then %q", enc, again)
				}
				if want := normalSession(s); !reflect.DeepEqual(back, want) {
					t.Fatalf("round trip of %q: got %+v; want %+v", value, back, want)
				}
			}
		}
		if s, err := DecodeSubject(value); err == nil {
			if s.Subject == "" {
				t.Fatalf("DecodeSubject accepted a record without a subject: %q", value)
			}
			if inRange(s.RevokedBefore) && inRange(s.Expiry) {
				enc := EncodeSubject(s)
				back, err := DecodeSubject(enc)
				if err != nil {
					t.Fatalf("EncodeSubject(DecodeSubject(%q)) = %q does not decode: %v", value, enc, err)
				}
				if again := EncodeSubject(back); again != enc {
					t.Fatalf("encoding is not a normal form: %q, then %q", enc, again)
				}
				want := s
				want.RevokedBefore, want.Expiry = s.RevokedBefore.UTC().Truncate(time.Second), s.Expiry.UTC().Truncate(time.Second)
				if !reflect.DeepEqual(back, want) {
					t.Fatalf("round trip of %q: got %+v; want %+v", value, back, want)
				}
			}
		}
	})
}

// normalSession is s as it reads back after EncodeSession: times in UTC, whole seconds.
func normalSession(s Session) Session {
	s.Rotated, s.Expiry = s.Rotated.UTC().Truncate(time.Second), s.Expiry.UTC().Truncate(time.Second)
	if s.RevokedAt != nil {
		t := s.RevokedAt.UTC().Truncate(time.Second)
		s.RevokedAt = &t
	}
	return s
}

// FuzzNewer feeds arbitrary pairs of values to the merge rule between a shard's base and its journal: it
// returns one of them, and never loses a revocation, a newer generation, or a later subject mark.
func FuzzNewer(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	active := func(gen uint64) string {
		return EncodeSession(Session{Subject: "alice", Generation: gen, Rotated: now, Expiry: now.Add(time.Hour), State: Active})
	}
	revoked := EncodeSession(Session{Subject: "alice", Generation: 2, Rotated: now, Expiry: now.Add(time.Hour), State: Revoked, Reason: ReasonLogout, RevokedAt: &now})
	mark := func(d time.Duration) string {
		return EncodeSubject(Subject{Subject: "bob", RevokedBefore: now.Add(d), Expiry: now.Add(time.Hour)})
	}
	for _, seed := range [][2]string{
		{active(1), active(2)}, {active(3), revoked}, {revoked, active(9)}, {revoked, ""}, {"", active(1)},
		{"garbage", revoked}, {active(1), "{}"}, {mark(0), mark(time.Second)}, {mark(time.Hour), "garbage"},
	} {
		f.Add(true, seed[0], seed[1])
		f.Add(false, seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, session bool, a, b string) {
		key := SubjectKey("bob")
		if session {
			key = SessionKey(NewSessionID(0))
		}
		got := Newer(key, a, b)
		if got != a && got != b {
			t.Fatalf("Newer(%q, %q) = %q: neither", a, b, got)
		}
		if Newer(key, a, a) != a {
			t.Fatalf("Newer(%q, itself) is not itself", a)
		}
		if session {
			sa, errA := DecodeSession(a)
			sb, errB := DecodeSession(b)
			sg, errG := DecodeSession(got)
			if (errA == nil || errB == nil) && errG != nil {
				t.Fatalf("Newer(%q, %q) chose %q, which does not decode, over one that does", a, b, got)
			}
			for _, x := range []struct {
				s   Session
				err error
			}{{sa, errA}, {sb, errB}} {
				if x.err != nil {
					continue
				}
				if x.s.State == Revoked && sg.State != Revoked {
					t.Fatalf("Newer(%q, %q) = %q lost a revocation", a, b, got)
				}
				if x.s.State == sg.State && x.s.Generation > sg.Generation {
					t.Fatalf("Newer(%q, %q) = %q lost a newer generation", a, b, got)
				}
			}
			return
		}
		sa, errA := DecodeSubject(a)
		sb, errB := DecodeSubject(b)
		sg, errG := DecodeSubject(got)
		if errA == nil && errB == nil && (errG != nil || sg.RevokedBefore.Before(sa.RevokedBefore) || sg.RevokedBefore.Before(sb.RevokedBefore)) {
			t.Fatalf("Newer(%q, %q) = %q moved a subject mark back", a, b, got)
		}
		if (errA == nil) != (errB == nil) && errG != nil {
			t.Fatalf("Newer(%q, %q) chose %q, which does not decode, over one that does", a, b, got)
		}
	})
}
