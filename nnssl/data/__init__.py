"""Raw data: conversion, validation, CT phantoms, preprocessed-dataset access."""
