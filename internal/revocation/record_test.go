package revocation

import (
	"testing"
	"time"
)

func TestASessionIDCarriesItsShard(t *testing.T) {
	for _, shard := range []int{0, 7, 255} {
		sid := NewSessionID(shard)
		got, ok := ShardOfSession(sid)
		if !ok || got != shard {
			t.Errorf("ShardOfSession(%q): got %d, %v; want %d", sid, got, ok, shard)
		}
	}
	if a, b := NewSessionID(1), NewSessionID(1); a == b {
		t.Errorf("two session ids are equal: %s", a)
	}
}

func TestMalformedSessionIDsHaveNoShard(t *testing.T) {
	good := NewSessionID(3)
	for name, sid := range map[string]string{
		"empty":                "",
		"no shard":             good[:22],
		"a shard out of range": good[:23] + "256",
		"a signed shard":       good[:23] + "-1",
		"a padded shard":       good[:23] + "03",
		"short random part":    "abc.1",
		"not base64url":        "!!!!!!!!!!!!!!!!!!!!!!.1",
	} {
		if n, ok := ShardOfSession(sid); ok {
			t.Errorf("%s (%q): got shard %d; want none", name, sid, n)
		}
	}
}

func TestRecordsRoundTripAndExpire(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := Session{Subject: "system:serviceaccount:a:b", Generation: 9, Rotated: now, Expiry: now.Add(time.Hour), State: Revoked, Reason: ReasonReuse, RevokedAt: &now}
	got, err := DecodeSession(EncodeSession(s))
	if err != nil || got.Subject != s.Subject || got.Generation != 9 || !got.Expiry.Equal(s.Expiry) || got.State != Revoked || got.RevokedAt == nil {
		t.Fatalf("session round trip: got %+v, %v; want %+v", got, err, s)
	}
	key := SessionKey("x")
	if Expired(key, EncodeSession(s), now.Add(59*time.Minute)) || !Expired(key, EncodeSession(s), now.Add(time.Hour)) {
		t.Fatalf("a session expiring at %v: want kept before and dropped at its expiry", s.Expiry)
	}
	if Expired(key, "{not json", now.Add(1000*time.Hour)) {
		t.Fatalf("an undecodable record was dropped; want it kept for a person to look at")
	}
	if _, err := DecodeSession(`{"state":"maybe"}`); err == nil {
		t.Fatalf("a record with an unknown state decoded")
	}
}

func TestNewerPicksTheRecordThatDecidesMore(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	active := func(gen uint64) string {
		return EncodeSession(Session{Subject: "a", Generation: gen, Rotated: now, Expiry: now.Add(time.Hour), State: Active})
	}
	revoked := EncodeSession(Session{Subject: "a", Generation: 1, Rotated: now, Expiry: now.Add(time.Hour), State: Revoked, RevokedAt: &now})
	mark := func(before time.Time) string {
		return EncodeSubject(Subject{Subject: "a", RevokedBefore: before, Expiry: now.Add(time.Hour)})
	}
	sk, uk := SessionKey("x"), SubjectKey("a")
	tests := map[string]struct{ key, a, b, want string }{
		"a higher generation wins":            {sk, active(2), active(3), active(3)},
		"a higher generation wins either way": {sk, active(3), active(2), active(3)},
		"revoked beats a higher generation":   {sk, active(5), revoked, revoked},
		"revoked beats active either way":     {sk, revoked, active(5), revoked},
		"a value beats none":                  {sk, "", active(1), active(1)},
		"a decodable value beats garbage":     {sk, "{", active(1), active(1)},
		"the later subject mark wins":         {uk, mark(now), mark(now.Add(time.Minute)), mark(now.Add(time.Minute))},
		"an earlier subject mark loses":       {uk, mark(now.Add(time.Minute)), mark(now), mark(now.Add(time.Minute))},
	}
	for name, tc := range tests {
		if got := Newer(tc.key, tc.a, tc.b); got != tc.want {
			t.Errorf("%s: got %s; want %s", name, got, tc.want)
		}
	}
}
