package issuer_test

import (
	"errors"
	"slices"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tokenwarden/tokenwarden/issuer"
)

// The API server is faked here; what a real one answers is the envtest integration tests' to check.
func TestTokenReviewer(t *testing.T) {
	const aud = "https://issuer.example.com/apps/billing"
	tests := []struct {
		name        string
		status      authenticationv1.TokenReviewStatus
		apiErr      error
		want        issuer.ServiceAccount
		unavailable bool // the error wraps ErrAuthenticatorUnavailable
	}{
		{name: "a ServiceAccount token for the audience is its ServiceAccount",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{aud},
				User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps:worker", UID: "sa-uid"}},
			want: issuer.ServiceAccount{Namespace: "apps", Name: "worker", UID: "sa-uid"}},
		{name: "a token bound to a Pod names the Pod",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{aud},
				User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps:worker", UID: "sa-uid", Extra: map[string]authenticationv1.ExtraValue{
					"authentication.kubernetes.io/pod-name": {"worker-7d9f"}, "authentication.kubernetes.io/pod-uid": {"pod-uid"}}}},
			want: issuer.ServiceAccount{Namespace: "apps", Name: "worker", UID: "sa-uid", PodName: "worker-7d9f", PodUID: "pod-uid"}},
		{name: "a token the API server does not authenticate is refused",
			status: authenticationv1.TokenReviewStatus{Error: "token has expired"}},
		{name: "a review that does not confirm the audience is refused",
			status: authenticationv1.TokenReviewStatus{Authenticated: true,
				User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps:worker"}}},
		{name: "a user who is not a ServiceAccount is refused",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{aud},
				User: authenticationv1.UserInfo{Username: "kubernetes-admin"}}},
		{name: "a malformed ServiceAccount username is refused",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{aud},
				User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps"}}},
		{name: "a review the API server cannot make is unavailable",
			apiErr: apierrors.NewServiceUnavailable("etcd is down"), unavailable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			var sent *authenticationv1.TokenReview
			client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
				sent = a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
				if tt.apiErr != nil {
					return true, nil, tt.apiErr
				}
				review := sent.DeepCopy()
				review.Status = tt.status
				return true, review, nil
			})
			r := &issuer.TokenReviewer{Reviews: client.AuthenticationV1().TokenReviews()}
			sa, err := r.Authenticate(t.Context(), "the-token", aud)
			if sent == nil || sent.Spec.Token != "the-token" || !slices.Equal(sent.Spec.Audiences, []string{aud}) {
				t.Fatalf("got review %+v sent; want the token and audience %s", sent, aud)
			}
			if got := errors.Is(err, issuer.ErrAuthenticatorUnavailable); got != tt.unavailable {
				t.Errorf("got error %v (unavailable %t); want unavailable %t", err, got, tt.unavailable)
			}
			if tt.want.Name == "" {
				if err == nil {
					t.Errorf("got %+v; want an error", sa)
				}
				return
			}
			if err != nil || sa != tt.want {
				t.Errorf("got %+v, %v; want %+v", sa, err, tt.want)
			}
		})
	}
}
