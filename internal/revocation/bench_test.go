package revocation

import (
	"fmt"
	"testing"
	"time"
)

func benchSession() Session {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return Session{Subject: "system:serviceaccount:team-a:payments", Generation: 42, Rotated: now, Expiry: now.Add(168 * time.Hour), State: Active}
}

func BenchmarkEncodeSession(b *testing.B) {
	s := benchSession()
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeSession(s)
	}
}

func BenchmarkDecodeSession(b *testing.B) {
	v := EncodeSession(benchSession())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSession(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewerOfTwoSessions(b *testing.B) {
	s := benchSession()
	a := EncodeSession(s)
	s.Generation++
	c := EncodeSession(s)
	key := SessionKey("x")
	b.ReportAllocs()
	for b.Loop() {
		_ = Newer(key, a, c)
	}
}

func BenchmarkShardOfSession(b *testing.B) {
	sid := NewSessionID(7)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ShardOfSession(sid); !ok {
			b.Fatal("no shard")
		}
	}
}

func BenchmarkMergedStats(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("%d records", n), func(b *testing.B) {
			base := map[string]string{}
			for i := range n {
				base[SessionKey(NewSessionID(0))] = EncodeSession(benchSession())
				_ = i
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = MergedStats(base, nil)
			}
		})
	}
}
