package login

// The entries of a policy's subjects ConfigMap: "sa.<namespace>.<name>" is the UID of a ServiceAccount the
// policy lets exchange its token; "pod.<uid>" is "<namespace>/<name>" of a Pod running as one of them. A
// namespace holds no dot, so the first dot after "sa." ends it.
const (
	serviceAccountPrefix = "sa."
	podPrefix            = "pod."
)

// ServiceAccountKey is the subjects entry of ServiceAccount namespace/name.
func ServiceAccountKey(namespace, name string) string {
	return serviceAccountPrefix + namespace + "." + name
}

// PodKey is the subjects entry of the Pod with this UID.
func PodKey(uid string) string { return podPrefix + uid }

// Subjects reads a policy's subjects ConfigMap.
type Subjects map[string]string

// ServiceAccountUID is the UID of ServiceAccount namespace/name, or false when it is not listed.
func (s Subjects) ServiceAccountUID(namespace, name string) (string, bool) {
	uid, ok := s[ServiceAccountKey(namespace, name)]
	return uid, ok && uid != ""
}

// PodExists reports whether the Pod with this UID is listed.
func (s Subjects) PodExists(uid string) bool {
	_, ok := s[PodKey(uid)]
	return ok && uid != ""
}
