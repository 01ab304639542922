package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// CacheOptions narrows the controller's informers to the Secrets and ConfigMaps tokenwarden owns or is
// pointed at (those with a tokenwarden.io/component label): never all Secrets of a cluster.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:    {Label: ComponentSelector()},
		&corev1.ConfigMap{}: {Label: ComponentSelector()},
	}}
}

// ComponentSelector selects objects labelled with a tokenwarden component.
func ComponentSelector() labels.Selector {
	req, err := labels.NewRequirement(v1alpha1.LabelComponent, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid label key
	}
	return labels.NewSelector().Add(*req)
}
