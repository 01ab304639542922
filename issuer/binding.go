package issuer

import (
	"net/http"
	"strings"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// A session ends with the credential that opened it. Its tokens carry that identity (token.Binding): a
// fingerprint of the user's password hash, or the ServiceAccount's UID and the UID of the Pod its token was
// bound to. Refresh and introspection compare it with what the issuer holds now, from what the controller
// materialised in its namespace (the policy's users, and the ServiceAccounts and Pods its spec allows): a
// user removed or whose password changed, a ServiceAccount deleted or created again, a Pod gone, or a
// subject the policy no longer allows ends the session at once, on every replica, as soon as the replica
// has observed the change.

// ended is why a session's identity no longer holds.
type ended struct {
	// reason is recorded on the session's revocation record and counted.
	reason string
	// description is what the client is told.
	description string
}

// Reasons a session ended with its credential, as its revocation record says.
const (
	reasonUserRemoved           = "user-removed"
	reasonPasswordChanged       = "password-changed"
	reasonNotAllowed            = "no-longer-allowed"
	reasonServiceAccountGone    = "serviceaccount-deleted"
	reasonServiceAccountRenewed = "serviceaccount-recreated"
	reasonPodGone               = "pod-deleted"
)

// checkBinding says whether the identity a session of p was opened for (subject, with binding b; nil for
// a session opened before sessions recorded one) still holds: nil when it does, an ended when it does not,
// and a 503 error when the issuer cannot tell now (what the controller materialises is missing).
func (s *Server) checkBinding(p *Policy, subject string, b *token.Binding) (*ended, *apiError) {
	if b == nil {
		b = &token.Binding{}
	}
	spec := p.Spec()
	if ns, name, ok := splitServiceAccount(subject); ok {
		switch {
		case !allowed(spec.Login.ServiceAccounts, ns, name):
			return &ended{reasonNotAllowed, "the policy no longer allows this ServiceAccount"}, nil
		case p.Subjects == nil:
			return nil, unavailable("the ServiceAccounts of this policy cannot be checked now")
		}
		uid, exists := p.Subjects.ServiceAccountUID(ns, name)
		switch {
		case !exists:
			return &ended{reasonServiceAccountGone, "the ServiceAccount was deleted"}, nil
		case b.ServiceAccountUID != "" && uid != b.ServiceAccountUID:
			return &ended{reasonServiceAccountRenewed, "the ServiceAccount was deleted and created again"}, nil
		case b.PodUID != "" && !p.Subjects.PodExists(b.PodUID):
			return &ended{reasonPodGone, "the Pod the ServiceAccount token was bound to is gone"}, nil
		}
		return nil, nil
	}
	switch {
	case spec.Login.PasswordSecretName == "":
		return &ended{reasonNotAllowed, "the policy no longer allows password login"}, nil
	case p.Users == nil:
		return nil, unavailable("the users of this policy cannot be checked now")
	}
	fp, exists := p.Users.Fingerprint(subject)
	switch {
	case !exists:
		return &ended{reasonUserRemoved, "the user was removed"}, nil
	case b.Password != "" && fp != b.Password:
		return &ended{reasonPasswordChanged, "the user's password changed"}, nil
	}
	return nil, nil
}

// endSession refuses a refresh of a session whose credential has ended, and records the end on the
// session, with its reason, so that every replica and kubectl see it. The refusal stands whether or not
// the record could be written: the check is made again on every request.
func (s *Server) endSession(r *http.Request, p *Policy, claims *token.RefreshClaims, why *ended) *apiError {
	s.metrics.refreshes.WithLabelValues(refreshEnded).Inc()
	log := s.logger(p).WithValues("session", claims.SessionID, "reason", why.reason)
	log.V(1).Info("Refresh refused: the session's credential has ended")
	if place, ok := placement(p, claims.SessionID); ok {
		err := s.store.RevokeSession(r.Context(), revocation.RevokeSessionRequest{Place: place, SessionID: claims.SessionID,
			Subject: claims.Subject, Expiry: claims.ExpiresAt.Time(), Reason: why.reason, Now: s.clock.Now()})
		if err != nil {
			log.Error(err, "Recording the end of a session failed")
		}
	}
	return badRequest(errInvalidGrant, "the session has ended: %s", why.description)
}

// splitServiceAccount splits a ServiceAccount's username, system:serviceaccount:<namespace>:<name>.
func splitServiceAccount(username string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}
