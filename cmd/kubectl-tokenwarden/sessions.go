package main

import (
	"context"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

func sessionsCommand(o *options) *cobra.Command {
	var subject string
	cmd := &cobra.Command{
		Use:   "sessions POLICY [--subject S]",
		Short: "List the sessions a policy has records of (refreshed or revoked), and subject-wide revocations",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.client()
			if err != nil {
				return err
			}
			return o.sessions(cmd.Context(), c, ns, args[0], subject)
		},
	}
	cmd.Flags().StringVar(&subject, "subject", "", "only the sessions of this subject")
	return cmd
}

type sessionRow struct {
	id, shard string
	rec       revocation.Session
}

func (o *options) sessions(ctx context.Context, c client.Client, ns, policy, subject string) error {
	p, err := getPolicy(ctx, c, ns, policy)
	if err != nil {
		return err
	}
	shards, err := listShards(ctx, c, p)
	if err != nil {
		return err
	}
	var rows []sessionRow
	var marks []revocation.Subject
	for _, sh := range shards {
		for k, v := range sh.records() {
			switch {
			case revocation.IsSessionKey(k):
				rec, err := revocation.DecodeSession(v)
				if err != nil || (subject != "" && rec.Subject != subject) {
					continue
				}
				rows = append(rows, sessionRow{id: strings.TrimPrefix(k, "s."), shard: sh.name, rec: rec})
			case revocation.IsSubjectKey(k):
				if m, err := revocation.DecodeSubject(v); err == nil && (subject == "" || m.Subject == subject) {
					marks = append(marks, m)
				}
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].rec.Subject != rows[j].rec.Subject {
			return rows[i].rec.Subject < rows[j].rec.Subject
		}
		return rows[i].id < rows[j].id
	})
	w := tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
	printf(w, "SESSION\tSUBJECT\tGENERATION\tSTATE\tREASON\tLAST REFRESH\tEXPIRES\n")
	for _, r := range rows {
		state := string(r.rec.State)
		if r.rec.State == revocation.Active && !o.now().Before(r.rec.Expiry) {
			state = "expired"
		}
		printf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.id, r.rec.Subject, r.rec.Generation, state, dash(r.rec.Reason),
			r.rec.Rotated.UTC().Format(time.RFC3339), r.rec.Expiry.UTC().Format(time.RFC3339))
	}
	w.Flush()
	if len(rows) == 0 {
		printf(o.streams.Out, "(no session records: sessions get one when first refreshed or revoked)\n")
	}
	if len(marks) > 0 {
		printf(o.streams.Out, "\nSubject-wide revocations:\n")
		w = tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
		printf(w, "  SUBJECT\tREVOKED BEFORE\tREASON\n")
		for _, m := range marks {
			printf(w, "  %s\t%s\t%s\n", m.Subject, m.RevokedBefore.UTC().Format(time.RFC3339), dash(m.Reason))
		}
		w.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
