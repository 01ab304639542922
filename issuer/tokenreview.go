package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
func (t *TokenReviewer) Authenticate(ctx context.Context, token, audience string) (ServiceAccount, error) {
	review, err := t.Reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("%w: %v", ErrAuthenticatorUnavailable, err)
	}
	st := review.Status
	switch {
	case !st.Authenticated:
		if st.Error != "" {
			return ServiceAccount{}, fmt.Errorf("token not authenticated: %s", st.Error)
		}
		return ServiceAccount{}, errors.New("token not authenticated")
	case !slices.Contains(st.Audiences, audience):
		// An API server that ignores spec.audiences would accept a token meant for anyone; the
		// TokenReview API asks clients to check that the audience came back.
		return ServiceAccount{}, fmt.Errorf("token not reviewed for audience %q", audience)
	}
	ns, name, ok := splitServiceAccount(st.User.Username)
	if !ok {
		return ServiceAccount{}, fmt.Errorf("user %q is not a ServiceAccount", st.User.Username)
	}
	return ServiceAccount{Namespace: ns, Name: name, UID: st.User.UID,
		PodName: extra(st.User.Extra, "authentication.kubernetes.io/pod-name"),
		PodUID:  extra(st.User.Extra, "authentication.kubernetes.io/pod-uid")}, nil
}

// extra is the single value of key in a reviewed user's extra information, or "".
func extra(m map[string]authenticationv1.ExtraValue, key string) string {
	if v := m[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}
