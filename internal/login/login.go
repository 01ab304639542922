package login

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// The bcrypt costs a users Secret may hold. Below MinCost a stolen hash is cheap to crack; above MaxCost
// one attempt takes seconds of a core (cost 31 takes days), so that a single login would stall the issuer.
const (
	MinCost = 10
	MaxCost = 14
)

// maxNamed bounds how many bad entries an error names; the rest are counted.
const maxNamed = 5

// Validate checks the entries of a users Secret: each value must be a bcrypt hash of a cost from MinCost to
// MaxCost. The error names the bad entries (never their values) and says what to do.
func Validate(data map[string][]byte) error {
	var bad []string
	for _, user := range slices.Sorted(maps.Keys(data)) {
		cost, err := bcrypt.Cost(data[user])
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("entry %q is not a bcrypt hash", user))
		case cost < MinCost || cost > MaxCost:
			bad = append(bad, fmt.Sprintf("entry %q has bcrypt cost %d", user, cost))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	more := ""
	if len(bad) > maxNamed {
		more = fmt.Sprintf(" and %d more", len(bad)-maxNamed)
		bad = bad[:maxNamed]
	}
	return fmt.Errorf("%s%s: every value must be a bcrypt hash of cost %d to %d (e.g. htpasswd -nbBC 12 user password)",
		strings.Join(bad, ", "), more, MinCost, MaxCost)
}

// Passwords checks usernames and passwords against bcrypt hashes. An unknown user costs one comparison with
// a decoy hash of the cost most of the hashes have, so that timing does not tell unknown users from wrong
// passwords (users whose hash has another cost excepted).
type Passwords struct {
	hashes       map[string][]byte
	fingerprints map[string]string
	decoy        []byte
}

// Fingerprint is what a session opened with a password records of it: a digest of the bcrypt hash, which
// changes when the password does (a new hash, with a new salt, even for the same password) and says
// nothing of the hash or the password.
func Fingerprint(hash []byte) string {
	sum := sha256.Sum256(append([]byte("tokenwarden password fingerprint\x00"), hash...))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// ErrNoDecoy is returned by New when no decoy hash can be made.
var ErrNoDecoy = errors.New("cannot make a decoy hash")

// New returns a checker over data, a users Secret's entries (username: bcrypt hash), which it copies.
func New(data map[string][]byte) (*Passwords, error) {
	p := &Passwords{hashes: make(map[string][]byte, len(data)), fingerprints: make(map[string]string, len(data))}
	costs := map[int]int{}
	for user, hash := range data {
		p.hashes[user] = append([]byte(nil), hash...)
		p.fingerprints[user] = Fingerprint(hash)
		if cost, err := bcrypt.Cost(hash); err == nil && cost >= MinCost && cost <= MaxCost {
			costs[cost]++
		}
	}
	cost := MinCost
	for c, n := range costs {
		if n > costs[cost] || (n == costs[cost] && c > cost) {
			cost = c
		}
	}
	decoy, err := decoyOf(cost)
	if err != nil {
		return nil, err
	}
	p.decoy = decoy
	return p, nil
}

// decoys holds one decoy hash per cost, made once: at cost 14 making one takes a second of a core.
var decoys sync.Map // int -> []byte

// decoyOf is a bcrypt hash, of the given cost, of a random password nobody knows.
func decoyOf(cost int) ([]byte, error) {
	if d, ok := decoys.Load(cost); ok {
		return d.([]byte), nil
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	decoy, err := bcrypt.GenerateFromPassword(secret, cost)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDecoy, err)
	}
	d, _ := decoys.LoadOrStore(cost, decoy)
	return d.([]byte), nil
}

// Check reports whether password is username's.
func (p *Passwords) Check(username, password string) bool {
	hash, known := p.hashes[username]
	if !known {
		hash = p.decoy
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return subtle.ConstantTimeEq(boolInt(known), 1)&subtle.ConstantTimeEq(boolInt(ok), 1) == 1
}

// Fingerprint returns the fingerprint of user's current hash, or false when there is no such user.
func (p *Passwords) Fingerprint(user string) (string, bool) {
	fp, ok := p.fingerprints[user]
	return fp, ok
}

// Users is the number of users.
func (p *Passwords) Users() int { return len(p.hashes) }

func boolInt(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
