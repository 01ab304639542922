package controllers

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// Lifetimes of the issuer's self-signed certificates. The serving certificate is renewed when a third of its
// life is left; the issuer reloads it from the mounted Secret without a restart.
const (
	IssuerCALifetime   = 10 * 365 * 24 * time.Hour
	IssuerCertLifetime = 90 * 24 * time.Hour
	issuerCertRenewal  = IssuerCertLifetime / 3
)

// Values of v1alpha1.LabelComponent on what the controller keeps for the issuer in its namespace.
const (
	// ComponentIssuerTLS labels the Secrets and the ConfigMap of the issuer's self-signed TLS.
	ComponentIssuerTLS = "issuer-tls"
	// ComponentIssuerPeer labels the Secret of the issuer replicas' peer key (IssuerPeerKeyReconciler).
	ComponentIssuerPeer = "issuer-peer"
)

// IssuerCertReconciler keeps the issuer's serving certificate when no other source of one is configured: a
// CA of its own (in Secret <SecretName>-ca, which only the controller reads), a certificate for Hosts signed
// by it (in Secret SecretName, type kubernetes.io/tls, which the issuer mounts: tls.crt, tls.key, ca.crt),
// and the CA's certificate in ConfigMap CAConfigMap for clients to trust. It renews the certificate before
// it expires and when the hosts change.
type IssuerCertReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Clock     clock.PassiveClock
	Namespace string
	// SecretName is the serving certificate's Secret; the CA's is SecretName + "-ca".
	SecretName string
	// CAConfigMap publishes the CA certificate (key ca.crt).
	CAConfigMap string
	// Hosts are the certificate's DNS names (the first is its common name).
	Hosts []string
}

// Reconcile makes the CA, the serving certificate and the published CA what they should be at now.
func (r *IssuerCertReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	now := r.Clock.Now()
	ca, caKey, err := r.ensureCA(ctx, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	serving := &corev1.Secret{}
	err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.SecretName}, serving)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, wrapf(err, "get secret %s", r.SecretName)
	}
	renewAt, why := r.renewal(serving, ca, now)
	if why != "" {
		if err := r.issue(ctx, serving, ca, caKey, caPEM, now); err != nil {
			return ctrl.Result{}, err
		}
		log.FromContext(ctx).Info("Issued the issuer's serving certificate", "secret", r.SecretName, "why", why, "hosts", r.Hosts)
		renewAt = now.Add(IssuerCertLifetime - issuerCertRenewal)
	}
	if err := r.publishCA(ctx, caPEM); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: max(renewAt.Sub(now), time.Second)}, nil
}

// ensureCA loads the CA, or makes a new one when there is none (or it expires within a certificate's life).
func (r *IssuerCertReconciler) ensureCA(ctx context.Context, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	name := r.SecretName + "-ca"
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: name}, secret)
	if client.IgnoreNotFound(err) != nil {
		return nil, nil, wrapf(err, "get secret %s", name)
	}
	if err == nil {
		cert, key, perr := parsePair(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey])
		if perr == nil && now.Add(IssuerCertLifetime).Before(cert.NotAfter) {
			return cert, key, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "tokenwarden issuer CA " + r.Namespace},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(IssuerCALifetime), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, MaxPathLenZero: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: name, Labels: tlsLabels()},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		}}
	if err := r.write(ctx, secret, want); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// renewal says when the serving certificate in secret is due, or why it must be issued now.
func (r *IssuerCertReconciler) renewal(secret *corev1.Secret, ca *x509.Certificate, now time.Time) (time.Time, string) {
	if secret.Name == "" {
		return time.Time{}, "there is none"
	}
	cert, _, err := parsePair(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey])
	switch {
	case err != nil:
		return time.Time{}, "the Secret does not hold a usable pair: " + err.Error()
	case cert.CheckSignatureFrom(ca) != nil:
		return time.Time{}, "it was not signed by the current CA"
	case !slices.Equal(cert.DNSNames, r.Hosts):
		return time.Time{}, "the hosts changed"
	case !now.Before(cert.NotAfter.Add(-issuerCertRenewal)):
		return time.Time{}, "a third of its life is left"
	case !bytes.Equal(secret.Data["ca.crt"], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})):
		return time.Time{}, "its ca.crt is not the CA's"
	}
	return cert.NotAfter.Add(-issuerCertRenewal), ""
}

func (r *IssuerCertReconciler) issue(ctx context.Context, have *corev1.Secret, ca *x509.Certificate, caKey *ecdsa.PrivateKey, caPEM []byte, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: r.Hosts[0]}, DNSNames: r.Hosts,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(IssuerCertLifetime), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName, Labels: tlsLabels()},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
			"ca.crt":                caPEM,
		}}
	return r.write(ctx, have, want)
}

// write creates want, or replaces the data of have (read before, ResourceVersion set) with want's.
func (r *IssuerCertReconciler) write(ctx context.Context, have, want *corev1.Secret) error {
	if have.ResourceVersion == "" {
		if err := r.Client.Create(ctx, want); err != nil {
			return wrapf(err, "create secret %s", want.Name)
		}
		return nil
	}
	updated := have.DeepCopy()
	updated.Labels, updated.Data, updated.Type = want.Labels, want.Data, want.Type
	if err := r.Client.Update(ctx, updated); err != nil {
		return wrapf(err, "update secret %s", want.Name)
	}
	return nil
}

// publishCA writes the CA certificate into the ConfigMap clients read it from.
func (r *IssuerCertReconciler) publishCA(ctx context.Context, caPEM []byte) error {
	cm := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.CAConfigMap}, cm)
	want := map[string]string{"ca.crt": string(caPEM)}
	switch {
	case client.IgnoreNotFound(err) != nil:
		return wrapf(err, "get configmap %s", r.CAConfigMap)
	case err != nil:
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.CAConfigMap, Labels: tlsLabels()}, Data: want}
		if err := r.Client.Create(ctx, cm); err != nil {
			return wrapf(err, "create configmap %s", r.CAConfigMap)
		}
		return nil
	case cm.Data["ca.crt"] == want["ca.crt"]:
		return nil
	}
	updated := cm.DeepCopy()
	updated.Data = want
	if err := r.Client.Update(ctx, updated); err != nil {
		return wrapf(err, "update configmap %s", r.CAConfigMap)
	}
	return nil
}

func tlsLabels() map[string]string {
	return map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelComponent: ComponentIssuerTLS}
}

func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("no PEM certificate and key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("the key is not the certificate's")
	}
	return cert, key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

// SetupWithManager reconciles on start and whenever one of its objects changes or goes.
func (r *IssuerCertReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if len(r.Hosts) == 0 || r.SecretName == "" || r.CAConfigMap == "" {
		return fmt.Errorf("the issuer's certificate needs a Secret, a CA ConfigMap and at least one host")
	}
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName}}}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && (o.GetName() == r.SecretName || o.GetName() == r.SecretName+"-ca" || o.GetName() == r.CAConfigMap)
	})
	toSecret := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.SecretName}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("issuercert").
		WatchesRawSource(source.Channel(start, toSecret)).
		WatchesMetadata(&corev1.Secret{}, toSecret, builder.WithPredicates(ours)).
		Watches(&corev1.ConfigMap{}, toSecret, builder.WithPredicates(ours)).
		Complete(r)
}
