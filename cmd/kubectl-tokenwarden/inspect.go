package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

func inspectCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect TOKEN",
		Short: "Decode a token (without trusting it) and say whether its session is active, rotated or revoked, and why",
		Long: "inspect decodes an access or refresh token without verifying its signature, finds its policy from\n" +
			"its issuer, and reads the session's record from the policy's shards. Pass - to read the token from stdin.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw := args[0]
			if raw == "-" {
				b := make([]byte, 16<<10)
				n, _ := o.streams.In.Read(b)
				raw = string(b[:n])
			}
			c, _, err := o.client()
			if err != nil {
				return err
			}
			return o.inspect(cmd.Context(), c, strings.TrimSpace(raw))
		},
	}
}

type decoded struct {
	header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	claims struct {
		Iss      string   `json:"iss"`
		Sub      string   `json:"sub"`
		Aud      audience `json:"aud"`
		Exp      int64    `json:"exp"`
		Iat      int64    `json:"iat"`
		AuthTime int64    `json:"auth_time"`
		Sid      string   `json:"sid"`
		Gen      *uint64  `json:"gen"`
		ClientID string   `json:"client_id"`
	}
}

type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = audience{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

func decode(raw string) (*decoded, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT: want three dot-separated parts")
	}
	d := &decoded{}
	for i, into := range []any{&d.header, &d.claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, fmt.Errorf("not a JWT: part %d is not base64url: %w", i+1, err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			return nil, fmt.Errorf("not a JWT: part %d is not JSON: %w", i+1, err)
		}
	}
	return d, nil
}

func unix(s int64) string {
	if s == 0 {
		return "-"
	}
	return time.Unix(s, 0).UTC().Format(time.RFC3339)
}

func (o *options) inspect(ctx context.Context, c client.Client, raw string) error {
	d, err := decode(raw)
	if err != nil {
		return err
	}
	kind := map[string]string{"at+jwt": "access token", "rt+jwt": "refresh token"}[d.header.Typ]
	if kind == "" {
		kind = fmt.Sprintf("unknown (typ %q)", d.header.Typ)
	}
	w := tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
	printf(w, "Kind:\t%s (signature not verified)\n", kind)
	printf(w, "Algorithm, key:\t%s, %s\n", d.header.Alg, d.header.Kid)
	printf(w, "Issuer:\t%s\n", d.claims.Iss)
	printf(w, "Subject:\t%s\n", d.claims.Sub)
	printf(w, "Audience:\t%s\n", strings.Join(d.claims.Aud, ", "))
	printf(w, "Session:\t%s\n", d.claims.Sid)
	if d.claims.Gen != nil {
		printf(w, "Generation:\t%d\n", *d.claims.Gen)
	}
	printf(w, "Logged in:\t%s\n", unix(d.claims.AuthTime))
	printf(w, "Issued, expires:\t%s, %s\n", unix(d.claims.Iat), unix(d.claims.Exp))
	w.Flush()

	verdict, why := o.verdict(ctx, c, d)
	printf(o.streams.Out, "\nVerdict: %s\n  %s\n", verdict, why)
	return nil
}

// verdict reads the session's record and the subject's mark and tells the token's story.
func (o *options) verdict(ctx context.Context, c client.Client, d *decoded) (string, string) {
	ns, name, ok := policyOf(d.claims.Iss)
	if !ok {
		return "unknown", fmt.Sprintf("the issuer %q is not a tokenwarden policy URL (<issuer>/<namespace>/<policy>)", d.claims.Iss)
	}
	p, err := getPolicy(ctx, c, ns, name)
	if err != nil {
		return "unknown", err.Error()
	}
	known := false
	for _, k := range p.Status.Keys {
		if k.KeyID == d.header.Kid {
			known = true
		}
	}
	if !known {
		return "invalid", fmt.Sprintf("key %q is not one of policy %s/%s's published keys: forged, or signed by a key removed after its tokens expired", d.header.Kid, ns, name)
	}
	now := o.now()
	expired := d.claims.Exp != 0 && !now.Before(time.Unix(d.claims.Exp, 0))
	shards, err := listShards(ctx, c, p)
	if err != nil {
		return "unknown", err.Error()
	}
	var rec *revocation.Session
	var mark *revocation.Subject
	for _, sh := range shards {
		rec, mark = findRecords(sh.records(), d.claims.Sid, d.claims.Sub, rec, mark)
	}
	auth := time.Unix(d.claims.AuthTime, 0)
	switch {
	case rec != nil && rec.State == revocation.Revoked:
		return "revoked", fmt.Sprintf("session %s was revoked at %s: %s", d.claims.Sid, rec.RevokedAt.UTC().Format(time.RFC3339), reasonText(rec.Reason))
	case mark != nil && auth.Before(mark.RevokedBefore):
		return "revoked", fmt.Sprintf("every session of %s that logged in before %s was revoked: %s", mark.Subject, mark.RevokedBefore.UTC().Format(time.RFC3339), reasonText(mark.Reason))
	case expired:
		return "expired", "the token expired at " + unix(d.claims.Exp)
	case d.claims.Gen != nil && rec != nil && *d.claims.Gen < rec.Generation:
		return "rotated", fmt.Sprintf("generation %d was replaced by generation %d at %s; presenting it again (outside the %s grace period) revokes the session",
			*d.claims.Gen, rec.Generation, rec.Rotated.UTC().Format(time.RFC3339), p.Spec.RefreshToken.ReuseGracePeriod.Duration)
	case rec != nil:
		return "active", fmt.Sprintf("the session is at generation %d, last refreshed %s", rec.Generation, rec.Rotated.UTC().Format(time.RFC3339))
	}
	return "active", "the session has not been refreshed or revoked yet (no record)"
}

func reasonText(r string) string {
	switch r {
	case revocation.ReasonReuse:
		return "a refresh token was used twice (reuse detection)"
	case revocation.ReasonLogout:
		return "logged out"
	case "":
		return "no reason given"
	}
	return r
}

func findRecords(data map[string]string, sid, subject string, rec *revocation.Session, mark *revocation.Subject) (*revocation.Session, *revocation.Subject) {
	if v, ok := data[revocation.SessionKey(sid)]; ok {
		if s, err := revocation.DecodeSession(v); err == nil {
			rec = &s
		}
	}
	if v, ok := data[revocation.SubjectKey(subject)]; ok {
		if m, err := revocation.DecodeSubject(v); err == nil && (mark == nil || m.RevokedBefore.After(mark.RevokedBefore)) {
			mark = &m
		}
	}
	return rec, mark
}

// policyOf reads namespace and policy from an issuer URL <base>/<namespace>/<policy>.
func policyOf(iss string) (string, string, bool) {
	u, err := url.Parse(iss)
	if err != nil {
		return "", "", false
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) < 2 {
		return "", "", false
	}
	return parts[len(parts)-2], parts[len(parts)-1], parts[len(parts)-2] != "" && parts[len(parts)-1] != ""
}
