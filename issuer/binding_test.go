package issuer_test

import (
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwarden/tokenwarden/issuer"
)

// exchanged logs ServiceAccount apps/worker in with token exchange (its token bound to Pod pod, unless
// "") and returns its tokens.
func (f *fixture) exchanged(pod string) answer {
	f.t.Helper()
	tok := saToken("apps", "worker", f.policy.Issuer)
	if pod != "" {
		tok = podToken("apps", "worker", f.policy.Issuer, pod)
	}
	r := f.postForm(f.policy, "token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token": {tok}}, nil)
	if r.status != http.StatusOK {
		f.t.Fatalf("exchange: got %d %s; want 200", r.status, r.body)
	}
	return r.answer(f.t)
}

// withUsers gives the policy these users instead of the fixture's.
func (f *fixture) withUsers(u bcryptUsers) { f.policy.Users = u }

// TestASessionEndsWithTheCredentialThatOpenedIt changes, one at a time, what a session was opened with,
// and checks that its refresh is refused saying why (and the end recorded with that reason), that its
// tokens are no longer active, and that a session of another subject goes on.
func TestASessionEndsWithTheCredentialThatOpenedIt(t *testing.T) {
	tests := map[string]struct {
		open   func(f *fixture) answer
		change func(f *fixture)
		reason string // in the error description
	}{
		"a user removed from the users Secret": {
			open: (*fixture).login,
			change: func(f *fixture) {
				u := maps.Clone(users())
				delete(u, "alice")
				f.withUsers(u)
			},
			reason: "the user was removed",
		},
		"a user whose password changed": {
			open: (*fixture).login,
			change: func(f *fixture) {
				u := maps.Clone(users())
				u["alice"] = u["bob"] // another hash: another password
				f.withUsers(u)
			},
			reason: "the user's password changed",
		},
		"password login taken out of the policy": {
			open:   (*fixture).login,
			change: func(f *fixture) { f.policy.Object.Spec.Login.PasswordSecretName = "" },
			reason: "the policy no longer allows password login",
		},
		"a ServiceAccount deleted": {
			open:   func(f *fixture) answer { return f.exchanged("") },
			change: func(f *fixture) { f.subjects.setUID("apps", "worker", "") },
			reason: "the ServiceAccount was deleted",
		},
		"a ServiceAccount created again under the same name": {
			open:   func(f *fixture) answer { return f.exchanged("") },
			change: func(f *fixture) { f.subjects.setUID("apps", "worker", "another-uid") },
			reason: "the ServiceAccount was deleted and created again",
		},
		"the Pod a ServiceAccount token was bound to gone": {
			open: func(f *fixture) answer {
				f.subjects.pods["pod-1"] = true
				return f.exchanged("pod-1")
			},
			change: func(f *fixture) { delete(f.subjects.pods, "pod-1") },
			reason: "the Pod the ServiceAccount token was bound to is gone",
		},
		"a ServiceAccount no longer listed in spec.login": {
			open: func(f *fixture) answer { return f.exchanged("") },
			change: func(f *fixture) {
				f.policy.Object.Spec.Login.ServiceAccounts = f.policy.Object.Spec.Login.ServiceAccounts[1:]
			},
			reason: "the policy no longer allows this ServiceAccount",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, options{})
			a := tc.open(f)
			a = f.mustRefresh(a.RefreshToken) // the session works, and has a record
			bob := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {"builder"}}, nil).answer(t)
			tc.change(f)

			r := f.refresh(a.RefreshToken)
			expectError(t, r, http.StatusBadRequest, "invalid_grant")
			if desc := r.object(t)["error_description"]; !strings.Contains(desc.(string), tc.reason) {
				t.Errorf("error_description %q; want it to say %q", desc, tc.reason)
			}
			for _, tok := range []string{a.AccessToken, a.RefreshToken} {
				if got := f.introspect(f.policy, tok); got["active"] != false {
					t.Errorf("introspection after the change: %v; want inactive", got)
				}
			}
			claims, err := f.policy.Codec.VerifyRefresh(a.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.store.Valid(f.policy.State, claims.SessionID, claims.Subject, claims.AuthTime.Time()); err == nil {
				t.Errorf("the session's record after the refusal: valid; want it revoked, with its reason")
			}
			if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "ended"); got != 1 {
				t.Errorf("refreshes counted as ended: %v; want 1", got)
			}
			// Someone else's session goes on, unless the change was theirs too.
			if name != "password login taken out of the policy" {
				f.mustRefresh(bob.RefreshToken)
			}
		})
	}
}

func TestASessionWhoseCredentialCannotBeCheckedNowIsNotRefreshed(t *testing.T) {
	f := newFixture(t, options{})
	sa, user := f.exchanged(""), f.login()
	f.policy.Subjects, f.policy.Users = nil, nil // not materialised (yet, or any more)
	for _, rt := range []string{sa.RefreshToken, user.RefreshToken} {
		expectError(t, f.refresh(rt), http.StatusServiceUnavailable, "temporarily_unavailable")
		// Introspection fails closed: neither active nor inactive while the answer is unknown.
		r := f.postForm(f.policy, "introspect", url.Values{"token": {rt}}, bearer(saToken("apps", "api", f.policy.Issuer)))
		expectError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	}
	// Nothing was decided: once the material is back, both sessions refresh.
	f.policy.Subjects, f.policy.Users = f.subjects, users()
	f.mustRefresh(sa.RefreshToken)
	f.mustRefresh(user.RefreshToken)
}

var _ issuer.Subjects = (*subjects)(nil)
