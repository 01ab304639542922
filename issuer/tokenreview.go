package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
)

// ErrAuthenticatorUnavailable is wrapped by an Authenticator's error when the token could not be reviewed
// at all, which says nothing about the token: the issuer answers 503 then, not a refusal.
var ErrAuthenticatorUnavailable = errors.New("token review unavailable")

// TokenReviewer is the Authenticator of a running issuer: it asks the Kubernetes API server, with a
// TokenReview, whether a token is a ServiceAccount token for the audience. The issuer's ServiceAccount
// needs RBAC to create tokenreviews.
type TokenReviewer struct {
	// Reviews is clientset.AuthenticationV1().TokenReviews().
	Reviews authenticationv1client.TokenReviewInterface
}

var _ Authenticator = (*TokenReviewer)(nil)

// Authenticate implements Authenticator. The errors never contain the token.
func (t *TokenReviewer) Authenticate(ctx context.Context, token, audience string) (namespace, name string, err error) {
	review, err := t.Reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrAuthenticatorUnavailable, err)
	}
	st := review.Status
	switch {
	case !st.Authenticated:
		if st.Error != "" {
			return "", "", fmt.Errorf("token not authenticated: %s", st.Error)
		}
		return "", "", errors.New("token not authenticated")
	case !slices.Contains(st.Audiences, audience):
		// An API server that ignores spec.audiences would accept a token meant for anyone; the
		// TokenReview API asks clients to check that the audience came back.
		return "", "", fmt.Errorf("token not reviewed for audience %q", audience)
	}
	ns, name, ok := splitServiceAccount(st.User.Username)
	if !ok {
		return "", "", fmt.Errorf("user %q is not a ServiceAccount", st.User.Username)
	}
	return ns, name, nil
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
