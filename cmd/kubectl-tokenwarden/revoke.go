package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

type revokeOptions struct {
	session, subject, reason string
	wait                     time.Duration
}

func revokeCommand(o *options) *cobra.Command {
	r := &revokeOptions{}
	cmd := &cobra.Command{
		Use:   "revoke POLICY (--session ID | --subject S) [--reason R]",
		Short: "Revoke a session, or every current session of a subject, by creating a TokenRevocation",
		Long: "revoke creates a TokenRevocation, so that every revocation a person makes is an object: declarative,\n" +
			"auditable and GitOps-friendly. It waits until the controller has applied it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (r.session == "") == (r.subject == "") {
				return errors.New("give exactly one of --session and --subject")
			}
			c, ns, err := o.client()
			if err != nil {
				return err
			}
			return o.revoke(cmd.Context(), c, ns, args[0], r)
		},
	}
	cmd.Flags().StringVar(&r.session, "session", "", "the session id (the sid claim) to revoke")
	cmd.Flags().StringVar(&r.subject, "subject", "", "revoke every session of this subject that logged in before now")
	cmd.Flags().StringVar(&r.reason, "reason", "", "why, recorded with the revocation")
	cmd.Flags().DurationVar(&r.wait, "wait", 30*time.Second, "how long to wait for the controller to apply it (0: do not wait)")
	return cmd
}

func (o *options) revoke(ctx context.Context, c client.Client, ns, policy string, r *revokeOptions) error {
	tr := &v1alpha1.TokenRevocation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: policy + "-"},
		Spec:       v1alpha1.TokenRevocationSpec{PolicyName: policy, Subject: r.subject, SessionID: r.session, Reason: r.reason},
	}
	if err := c.Create(ctx, tr); err != nil {
		return fmt.Errorf("create TokenRevocation: %w", err)
	}
	printf(o.streams.Out, "tokenrevocation.tokenwarden.io/%s created\n", tr.Name)
	if r.wait == 0 {
		return nil
	}
	var last *metav1.Condition
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, r.wait, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(tr), tr); err != nil {
			return false, nil
		}
		last = meta.FindStatusCondition(tr.Status.Conditions, v1alpha1.ConditionApplied)
		return last != nil && last.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		if last != nil {
			return fmt.Errorf("not applied after %s: %s: %s", r.wait, last.Reason, last.Message)
		}
		return fmt.Errorf("not applied after %s: is the tokenwarden controller running?", r.wait)
	}
	printf(o.streams.Out, "Revoked %s of %s at %s (%s)\n", tr.Status.Target, policy, tr.Status.AppliedAt.UTC().Format(time.RFC3339), tr.Status.Shard)
	return nil
}
