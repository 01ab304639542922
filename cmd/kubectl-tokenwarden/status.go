package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

func statusCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status POLICY",
		Short: "Show a policy's keys, revocation shards and revoked sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.client()
			if err != nil {
				return err
			}
			return o.status(cmd.Context(), c, ns, args[0])
		},
	}
}

func (o *options) status(ctx context.Context, c client.Client, ns, name string) error {
	p, err := getPolicy(ctx, c, ns, name)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
	printf(w, "Policy:\t%s/%s\n", p.Namespace, p.Name)
	printf(w, "Issuer:\t%s\n", p.Status.IssuerURL)
	printf(w, "Algorithm:\t%s\n", p.Spec.Signing.Algorithm)
	printf(w, "Lifetimes:\taccess %s, refresh %s\n", p.Spec.AccessToken.Lifetime.Duration, p.Spec.RefreshToken.Lifetime.Duration)
	for _, cond := range p.Status.Conditions {
		printf(w, "%s:\t%s\t%s\n", cond.Type, cond.Status, cond.Message)
	}
	w.Flush()

	printf(o.streams.Out, "\nKeys:\n")
	w = tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
	printf(w, "  KID\tSTATE\tACTIVATED\tRETIRED\tREMOVED AT\n")
	for _, k := range p.Status.Keys {
		printf(w, "  %s\t%s\t%s\t%s\t%s\n", k.KeyID, k.State, ts(k.ActivatedAt), ts(k.RetiredAt), ts(k.RemoveAt))
	}
	w.Flush()

	shards, err := listShards(ctx, c, p)
	if err != nil {
		return err
	}
	printf(o.streams.Out, "\nRevocation shards (base, journal and sealed segments together):\n")
	w = tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
	printf(w, "  SHARD\tRECORDS\tBYTES\tREVOKED\n")
	total := 0
	for _, sh := range shards {
		st := revocation.MergedStats(sh.base, sh.pending)
		total += st.RevokedSessions
		printf(w, "  %s\t%d\t%d\t%d\n", sh.name, st.Records, st.Bytes, st.RevokedSessions)
	}
	w.Flush()
	printf(o.streams.Out, "\nRevoked sessions: %d\n", total)
	return nil
}

func ts(t *metav1.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// shard is one revocation shard: its base's data, and its entries in the journal and the sealed segments.
type shard struct {
	name          string
	base, pending map[string]string
}

// records merges a shard's base and pending entries as the issuer does.
func (s shard) records() map[string]string {
	out := make(map[string]string, len(s.base)+len(s.pending))
	for k, v := range s.base {
		out[k] = v
	}
	for k, v := range s.pending {
		out[k] = revocation.Newer(k, out[k], v)
	}
	return out
}

// listShards returns policy p's shards in index order, read where the controller keeps them (the issuer's
// namespace, in the policy's status).
func listShards(ctx context.Context, c client.Client, p *v1alpha1.TokenPolicy) ([]shard, error) {
	ns := p.Status.IssuerNamespace
	if ns == "" {
		return nil, fmt.Errorf("TokenPolicy %s/%s has no status.issuerNamespace yet: is the tokenwarden controller running?", p.Namespace, p.Name)
	}
	objs, err := configmap.For(p, ns).List(ctx, c)
	if err != nil {
		return nil, forbidden(err, "read the revocation ConfigMaps in namespace "+ns, "the Role "+viewerRole+" in namespace "+ns)
	}
	pending := objs.Pending()
	out := make([]shard, 0, len(objs.Bases))
	for _, i := range slices.Sorted(maps.Keys(objs.Bases)) {
		out = append(out, shard{name: ns + "/" + objs.Bases[i].Name, base: objs.Bases[i].Data, pending: pending[i]})
	}
	return out, nil
}

// viewerRole is the name the chart gives, with the default release name, to the ClusterRole (TokenPolicies,
// TokenRevocations) and the Role of its namespace (revocation ConfigMaps) that the read commands need.
const viewerRole = "tokenwarden-revocation-viewer"

// getPolicy reads TokenPolicy ns/name.
func getPolicy(ctx context.Context, c client.Client, ns, name string) (*v1alpha1.TokenPolicy, error) {
	p := &v1alpha1.TokenPolicy{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		return nil, forbidden(fmt.Errorf("get TokenPolicy %s/%s: %w", ns, name, err), "read TokenPolicies in namespace "+ns, "the ClusterRole "+viewerRole)
	}
	return p, nil
}

// forbidden turns a Forbidden error into one that says which role grants what was refused.
func forbidden(err error, what, role string) error {
	if !apierrors.IsForbidden(err) {
		return err
	}
	return fmt.Errorf("%w\nYou may not %s. Ask for %s to be bound to you (the tokenwarden chart creates it; "+
		"with a release not named tokenwarden it is <release>-revocation-viewer).", err, what, role)
}
